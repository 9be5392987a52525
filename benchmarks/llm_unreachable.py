"""How long `layout=llm` takes to give up when no LLM can answer: s2 on two fabricated concepts against a refused
port, a missing key, a server refusing the key, a port that takes no connection (its accept queue full, as with a
wrong address or a firewall dropping packets), a server that accepts but never answers and one that answers every
request with HTTP 500 (a model that failed to load), with the default transport retries (llm.max_retries=4).
The dropped and the silent cases run with llm.timeout=5 so that the baseline ends in minutes.

    python benchmarks/llm_unreachable.py            # this checkout
    PYTHONPATH=/path/to/other/checkout python benchmarks/llm_unreachable.py   # a baseline, side by side

Prints wall and CPU seconds per case and how the stage ended (an exception's first words, or done/fallback counts).
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: a baseline checkout comes first
os.environ["HF_HUB_OFFLINE"] = "1"


def main() -> None:
    from tests.conftest import make_cfg
    from tests.helpers.llm_server import LLMServer, Reply
    from tests.helpers.trees import fake_s1

    from gen4gen.stages import s2_compose

    print(f"gen4gen from {Path(s2_compose.__file__).parents[2]}")

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    held = socket.create_connection(hole.getsockname())  # fills the one-slot queue: further connects hang
    key = "sk-benchmark-key-0001"
    # name: (base url, or None for the refusing test server / "silent" for the never-answering one; key; overrides)
    cases = {"connection refused": ("http://127.0.0.1:9/v1", key, []), "no key": (None, "", []),
             "key refused (401)": (None, key, []),
             "no connection (dropped)": (f"http://127.0.0.1:{hole.getsockname()[1]}/v1", key, ["llm.timeout=5"]),
             "accepts, never answers": ("silent", key, ["llm.timeout=5"]),
             "HTTP 500 to every request": ("failing", key, [])}
    try:
        server = LLMServer(lambda body, n: Reply(status=401), models_status=401)
    except TypeError:  # an older test server: no GET /models, the chat requests refuse the key
        server = LLMServer(lambda body, n: Reply(status=401))
    silent = LLMServer(lambda body, n: Reply('{"objects": []}', delay=3600))
    failing = LLMServer(lambda body, n: Reply(status=500))
    with server as srv, silent, failing:
        for name, (url, key, extra) in cases.items():
            url = {"silent": silent.base_url, "failing": failing.base_url}.get(url, url) or srv.base_url
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                fake_s1(tmp / "stages", {"pets": {"cat": 1, "dog": 1}}, size=(60, 50))
                os.environ["OPENAI_API_KEY"] = key
                cfg = make_cfg(tmp, "stage=s2", "layout=llm", f"llm.base_url={url}",
                               "compose.num_samples=3", "compose.size=[128,128]", *extra)
                t0, c0 = time.perf_counter(), time.process_time()
                try:
                    s = s2_compose.run(cfg)
                    outcome = f"exit ok: {s.done} done, {s.notes.get('with fallback', 0)} on the fallback"
                except Exception as e:  # noqa: BLE001 - the refusal is the measured outcome
                    outcome = f"{type(e).__name__}: {str(e)[:70]}"
                print(f"{name:26s} wall {time.perf_counter() - t0:6.2f} s  cpu {time.process_time() - c0:5.2f} s  "
                      f"{outcome}", flush=True)
    held.close()
    hole.close()


if __name__ == "__main__":
    main()
