"""How long `layout=llm` takes to give up when no LLM can answer: s2 on two fabricated concepts against a refused
port, a missing key and a server refusing the key, with the default transport retries (llm.max_retries=4).

    python benchmarks/llm_unreachable.py            # this checkout
    PYTHONPATH=/path/to/other/checkout python benchmarks/llm_unreachable.py   # a baseline, side by side

Prints wall and CPU seconds per case and how the stage ended (an exception's first words, or done/fallback counts).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: a baseline checkout comes first
os.environ["HF_HUB_OFFLINE"] = "1"


def main() -> None:
    from tests.conftest import make_cfg
    from tests.llm_server import LLMServer, Reply
    from tests.s2_data import fake_s1

    from gen4gen.stages import s2_compose

    print(f"gen4gen from {Path(s2_compose.__file__).parents[2]}")

    cases = {"connection refused": ("http://127.0.0.1:9/v1", "sk-benchmark-key-0001"),
             "no key": (None, ""), "key refused (401)": (None, "sk-benchmark-key-0001")}
    try:
        server = LLMServer(lambda body, n: Reply(status=401), models_status=401)
    except TypeError:  # an older test server: no GET /models, the chat requests refuse the key
        server = LLMServer(lambda body, n: Reply(status=401))
    with server as srv:
        for name, (url, key) in cases.items():
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                fake_s1(tmp / "stages", {"pets": {"cat": 1, "dog": 1}}, size=(60, 50))
                os.environ["OPENAI_API_KEY"] = key
                cfg = make_cfg(tmp, "stage=s2", "layout=llm", f"llm.base_url={url or srv.base_url}",
                               "compose.num_samples=3", "compose.size=[128,128]")
                t0, c0 = time.perf_counter(), time.process_time()
                try:
                    s = s2_compose.run(cfg)
                    outcome = f"exit ok: {s.done} done, {s.notes.get('with fallback', 0)} on the fallback"
                except Exception as e:  # noqa: BLE001 - the refusal is the measured outcome
                    outcome = f"{type(e).__name__}: {str(e)[:70]}"
                print(f"{name:20s} wall {time.perf_counter() - t0:6.2f} s  cpu {time.process_time() - c0:5.2f} s  "
                      f"{outcome}", flush=True)


if __name__ == "__main__":
    main()
