"""Issue 14 #5-7 against the hostile test server: numbers that underflow or overflow, a server that echoes
the API key back, and a server that is not there or refuses the key."""
from __future__ import annotations

import itertools
import json
import re
import socket
import time

import pytest
from pydantic import BaseModel, ValidationError

from gen4gen.layout.checks import check_layout
from gen4gen.layout.schema import LayoutReply
from gen4gen.llm.health import LLMUnreachable
from gen4gen.llm.replies import ReplyInvalid, Request
from gen4gen.markers import done_items
from gen4gen.stages import s2_compose, s4_caption
from tests.conftest import make_cfg
from tests.helpers.llm_server import ECHO_AUTH, ECHO_KEY, ECHO_KEY_ESCAPED, NUMERIC_BOXES, LLMServer, Reply, llm_client
from tests.helpers.pipeline_run import FAST, cli, small_sources
from tests.helpers.trees import fake_s1
from tests.helpers.s2_llm_replies import asked_objects, good_content, kind

SENTINEL = "sk-ECHO-7d2b91-never-on-disk"


class Answer(BaseModel):
    name: str
    count: int


# ---------------------------------------------------------------- #5 numbers from an LLM
@pytest.mark.parametrize("box", NUMERIC_BOXES, ids=lambda b: repr(b)[:40])
@pytest.mark.parametrize("min_area_rule", [True, False])
def test_numeric_boxes_are_invalid_replies_never_exceptions(box, min_area_rule):
    """The schema or the check says why (10**400 is no float); nothing else is raised."""
    data = {"objects": [{"name": "cat_0", "box": [20, 300, 150, 150]}, {"name": "dog_0", "box": box}]}
    with pytest.raises((ReplyInvalid, ValidationError)):
        check_layout(LayoutReply.model_validate(data), ["cat_0", "dog_0"], ["cat", "dog"], 512, 0.3, min_area_rule)


def test_any_exception_in_a_check_is_an_invalid_reply_that_is_retried(tmp_path):
    calls = itertools.count()

    def check(value: Answer) -> Answer:
        if next(calls) == 0:
            return value.count / 0  # a bug or an underflow deep in a check
        return value

    with LLMServer(lambda body, n: Reply('{"name": "x", "count": 1}')) as srv:
        client = llm_client(srv.base_url, "m", cache_dir=tmp_path, max_retries=0)
        [res] = client.run([Request([{"role": "user", "content": "q"}], Answer, check=check)])
    assert res.ok and res.attempts == 2
    assert res.errors == ["attempt 1: ZeroDivisionError while checking the reply: division by zero"]


def numeric_replies(body: dict, n: int) -> Reply:
    """Every layout answer carries one of the numeric cases; ratios underflow too; scenes are fine."""
    if kind(body) == "ratios":
        return Reply(json.dumps({"ratios": [{"name": o, "ratio": r} for o, r in
                                            zip(asked_objects(body), [5e-324, 1e-320, 1e308])]}))
    if kind(body) != "layout":
        return Reply(good_content(body))
    data = json.loads(good_content(body))
    data["objects"][-1]["box"] = NUMERIC_BOXES[n % len(NUMERIC_BOXES)]
    return Reply(json.dumps(data))


def test_s2_with_underflowing_replies_falls_back_and_reruns_cleanly(tmp_path):
    fake_s1(tmp_path / "stages", {"pets": {"cat": 1, "dog": 1}, "desk": {"cup": 1, "lamp": 1, "book": 1}},
            size=(60, 50))
    with LLMServer(numeric_replies) as srv:
        args = ["stage=s2", "layout=llm", f"llm.base_url={srv.base_url}", "llm.max_retries=0",
                "compose.num_samples=6", "compose.size=[128,128]"]
        first = s2_compose.run(make_cfg(tmp_path, *args))
        again = s2_compose.run(make_cfg(tmp_path, *args))
        n_requests = len(srv.requests)
    assert (first.total, first.done, first.failed) == (12, 12, 0)
    assert (again.skipped, again.done) == (12, 0) and n_requests == len(srv.requests)  # invalid replies stay done
    print(f"\nnumeric: {n_requests} requests, {first.done}/{first.total} compositions done on the fallback")
    for folder, meta in done_items(tmp_path / "stages" / "s2_object_compositions"):
        layout = json.loads((folder / "layout.json").read_text())
        assert layout["planner"] == "heuristic" and layout["fallback"].startswith("llm layout failed after 3")
        assert "redo" not in meta and layout["llm"]["transport_failed"] is False
        assert layout["size_ratios"]["cat" if "cat" in folder.name else "cup"] <= 1.0


# ---------------------------------------------------------------- #6 the API key in a reply
def echo_replies(body: dict, n: int) -> Reply:
    """A server that writes the caller's bearer key (and its whole Authorization header) into what it answers:
    captions, scene phrases, background prompts, object names and error bodies; now and then a good reply."""
    if n % 5 == 4:
        return Reply(f"server error, your header was {ECHO_AUTH}", status=500)
    if n % 3 == 2:  # a good answer, so some items do reach the LLM path
        return good_caption(body) if "caption" in body["messages"][0]["content"] else Reply(good_content(body))
    if "caption" in body["messages"][0]["content"]:
        return Reply(json.dumps({"caption": f"A cat and a cup, key {ECHO_KEY}, {ECHO_AUTH}."}))
    data = json.loads(good_content(body))
    if "scenes" in data:
        data["scenes"] = [f"in the garden {ECHO_KEY}", f"on a porch {ECHO_AUTH}", "in a park"]
    if "objects" in data:
        data["background_prompt"] = f"a garden, {ECHO_KEY}"
        data["objects"][0]["name"] = f"{data['objects'][0]['name']} {ECHO_KEY}"
    if "ratios" in data:
        data["ratios"][0]["name"] = ECHO_KEY
    text = json.dumps(data)
    if n % 7 == 3:  # the key written with JSON escapes: only a parser sees it
        text = text.replace(ECHO_KEY, ECHO_KEY_ESCAPED)
    return Reply(text)


def test_a_reply_carrying_the_key_is_redacted_then_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    script = [Reply(f'Sure, {ECHO_AUTH}: {{"name": "{ECHO_KEY}", "count": 1}}'),
              Reply('{"name": "' + ECHO_KEY_ESCAPED + '", "count": 1}'),  # only a JSON parser sees the key
              Reply(json.dumps({"name": SENTINEL.upper(), "count": 1})),  # in other letters
              Reply(f"{ECHO_KEY} is wrong", status=500), Reply('{"name": "cat", "count": 2}')]
    with LLMServer(lambda body, n: script[min(n, 4)]) as srv:
        client = llm_client(srv.base_url, "m", cache_dir=tmp_path, max_retries=0, max_attempts=5)
        [res] = client.run([Request([{"role": "user", "content": "q"}], Answer)])
        fed_back = json.dumps(srv.requests[-1]["messages"])
    assert res.ok and res.value.name == "cat" and res.attempts == 5
    assert [e.split(":")[0] for e in res.errors] == ["attempt 1", "attempt 2", "attempt 3",
                                                     "InternalServerError (HTTP 500)"]
    assert all("repeated the API key" in e for e in res.errors[:3])
    assert SENTINEL.lower() not in fed_back.lower() and "[redacted]" in fed_back  # never shown its echo again
    [entry] = list(tmp_path.rglob("*.json"))
    assert SENTINEL.encode() not in entry.read_bytes()
    entry.write_text(entry.read_text().replace('"cat"', json.dumps(SENTINEL)))  # a cache file from before
    with LLMServer(lambda body, n: Reply('{"name": "dog", "count": 3}')) as srv:
        [again] = llm_client(srv.base_url, "m", cache_dir=tmp_path).run([Request([{"role": "user", "content": "q"}],
                                                                                Answer)])
    assert not again.cached and again.value.name == "dog"


def good_caption(body: dict) -> Reply:
    user = body["messages"][1]["content"]  # text, or the VLM's [text, image] parts
    text = user if isinstance(user, str) else next(p["text"] for p in user if p.get("type") == "text")
    facts = json.loads(text[text.index("{"):])
    from gen4gen.words import count_phrase, join_list

    objects = join_list([count_phrase(o["concept"], o["count"]) for o in facts["objects"]])
    return Reply(json.dumps({"caption": f"A photo of {objects} {facts.get('background') or ''}".strip() + "."}))


@pytest.mark.slow
def test_an_echoed_key_reaches_no_file_and_no_log(tmp_path):
    src = small_sources(tmp_path / "src")
    with LLMServer(echo_replies) as srv:
        result = cli(tmp_path, "stage=all", "segmenter=grabcut", "layout=llm", "captioner=llm", *FAST,
                     f"llm.base_url={srv.base_url}", "llm.max_retries=0", "llm.max_attempts=2",
                     env={"OPENAI_API_KEY": SENTINEL})
        seen = [{k.lower(): v for k, v in h.items()}.get("authorization") for h in srv.headers]
    assert seen and all(h == f"Bearer {SENTINEL}" for h in seen)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(src)]
    assert any(p.name == "captions.json" for p in files) and any("llm_cache" in p.parts for p in files)
    assert any(p.suffix == ".log" for p in files) and any(p.name == "train.sh" or p.suffix == ".html" for p in files)
    leaked = [p for p in files if SENTINEL.encode() in p.read_bytes()]
    assert leaked == []
    assert SENTINEL not in result.stdout + result.stderr
    # the replies that carried it were rejected with a reason the model can act on, and said so on file
    errors = [e for p in (tmp_path / "stages").rglob("layout.json") for e in json.loads(p.read_text())["llm"]["errors"]]
    errors += [e for _, m in done_items(tmp_path / "stages" / "s4_captions") for e in m["llm"]["errors"]]
    assert any("repeated the API key" in e for e in errors)
    assert all("[redacted]" not in json.loads(p.read_text())["detailed"]
               for p in (tmp_path / "stages").rglob("captions.json"))
    print(f"\nkey echo: {len(seen)} requests, {len(files)} files checked, {len(leaked)} with the key, "
          f"{sum('repeated the API key' in e for e in errors)} replies rejected for carrying it")


# ---------------------------------------------------------------- #7 unreachable LLM or missing key
def s2_ready(tmp_path):
    fake_s1(tmp_path / "stages", {"pets": {"cat": 1, "dog": 1}}, size=(60, 50))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no key", "refused", "key refused by /models", "key refused on chat"])
def test_unreachable_llm_is_one_line_and_a_non_zero_exit_fast(tmp_path, case):
    s2_ready(tmp_path)
    env, want = {}, "cannot reach http://127.0.0.1:9/v1"
    status = 401 if case.startswith("key refused") else 200
    with LLMServer(lambda body, n: Reply(status=status), models_status=401 if "models" in case else 200) as srv:
        url = "http://127.0.0.1:9/v1" if case == "refused" else srv.base_url
        if case == "no key":
            env, want = {"OPENAI_API_KEY": ""}, "OPENAI_API_KEY is not set"
        elif case.startswith("key refused"):
            want = f"{srv.base_url} refused the key in OPENAI_API_KEY (HTTP 401)"
        t0 = time.perf_counter()
        result = cli(tmp_path, "stage=s2", "layout=llm", f"llm.base_url={url}", "compose.size=[128,128]",
                     env=env, check=False)
        seconds = time.perf_counter() - t0
        posts = len(srv.requests)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("s2: ") and want in ln]
    assert len(lines) == 1 and "fallback_on_unreachable" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout and "Retrying request" not in result.stdout + result.stderr
    assert posts <= (2 if case == "key refused on chat" else 0)  # found before (or at) the first request
    assert seconds < 30  # the process start and imports; the LLM part is milliseconds
    print(f"\n{case}: exit {result.returncode} in {seconds:.1f} s (whole CLI), {posts} chat requests")
    assert not list((tmp_path / "stages" / "s2_object_compositions").rglob("meta.json"))


def test_no_such_model_stops_like_an_unreachable_server():
    with LLMServer(lambda body, n: Reply(status=404)) as srv:
        with pytest.raises(LLMUnreachable, match=r"has no chat endpoint or no model 'gpt-x' \(HTTP 404\)"):
            llm_client(srv.base_url, "gpt-x", max_retries=0).run(
                [Request([{"role": "user", "content": f"q{i}"}], Answer) for i in range(20)])
        assert len(srv.requests) <= 8  # the requests in flight when the first 404 came back; no more


@pytest.fixture
def black_hole():
    """A 127.0.0.1 port that takes no connection: its one-slot accept queue is full and never drained, so a
    connect hangs, as with a wrong address or a firewall that drops packets."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    held = socket.create_connection(srv.getsockname())  # fills the queue
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}/v1"
    finally:
        held.close()
        srv.close()


def test_a_host_that_takes_no_connection_is_unreachable_after_the_connect_timeout(black_hole):
    client = llm_client(black_hole, "m", timeout=60, connect_timeout=0.5, max_retries=3)
    t0 = time.perf_counter()
    with pytest.raises(LLMUnreachable, match=rf"^cannot reach {re.escape(black_hole)} \(no connection within 0.5 s\)"):
        client.run([Request([{"role": "user", "content": f"q{i}"}], Answer) for i in range(20)])
    assert time.perf_counter() - t0 < 5  # one probe's connect timeout, not 20 requests x 4 tries x 60 s
    fallback = llm_client(black_hole, "m", timeout=60, connect_timeout=0.5, fallback_on_unreachable=True)
    results = fallback.run([Request([{"role": "user", "content": f"q{i}"}], Answer) for i in range(5)])
    assert all(r.transport and not r.ok and "no connection within 0.5 s" in r.errors[0] for r in results)


def test_a_server_that_never_answers_stops_after_one_request_s_tries(tmp_path):
    """It accepts connections and answers /models, but no chat request: once two requests have timed out on
    every try with nothing answered, the others stop waiting (not 3 attempts x every request)."""
    with LLMServer(lambda body, n: Reply('{"name": "x", "count": 1}', delay=30)) as srv:
        client = llm_client(srv.base_url, "m", timeout=0.3, max_retries=1, concurrency=2)
        t0 = time.perf_counter()
        with pytest.raises(LLMUnreachable, match=r"2 requests timed out on each of their 2 tries \(llm.timeout=0.3 s\) "
                                                 r"and none was answered"):
            client.run([Request([{"role": "user", "content": f"q{i}"}], Answer) for i in range(10)])
        seconds = time.perf_counter() - t0
        posts = len(srv.requests)
    assert posts <= 4 and seconds < 5  # the two in flight, each tried twice; the other 8 never sent


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_server_that_answers_every_request_with_an_error_stops_after_one_request_s_tries(status):
    """A model that failed to load (5xx) or a spent quota (429) on every request: two requests' tries tell, the
    others are not sent. Once anything was answered, such errors are that request's failure only; one request
    alone is its own failure too (a single error can beat the first good replies back)."""
    with LLMServer(lambda body, n: Reply(status=status, headers={"Retry-After": "0"})) as srv:
        client = llm_client(srv.base_url, "m", max_retries=1, concurrency=1)
        with pytest.raises(LLMUnreachable, match=rf"2 requests got HTTP {status} on each of their 2 tries and none"):
            client.run([Request([{"role": "user", "content": f"q{i}"}], Answer) for i in range(10)])
        assert len(srv.requests) == 4  # two requests, tried twice each; the other 8 never sent
        [alone] = llm_client(srv.base_url, "m", max_retries=0, max_attempts=2).run(
            [Request([{"role": "user", "content": "q"}], Answer)])
    assert not alone.ok and alone.transport and len(alone.errors) == 1  # its tries were the client's; no 2nd attempt

    with LLMServer(lambda body, n: Reply('{"name": "x", "count": 1}') if n == 0 else Reply(status=status)) as srv:
        first, later = llm_client(srv.base_url, "m", max_retries=0, concurrency=1, max_attempts=2).run(
            [Request([{"role": "user", "content": q}], Answer) for q in ("q0", "q1")])
    assert first.ok and not later.ok and later.transport and len(later.errors) == 2


def test_a_server_without_keys_needs_none(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with LLMServer(lambda body, n: Reply('{"name": "x", "count": 1}')) as srv:
        [res] = llm_client(srv.base_url, "m", api_key_env=None).run([Request([{"role": "user", "content": "q"}], Answer)])
        with pytest.raises(LLMUnreachable, match="^OPENAI_API_KEY is not set"):
            llm_client(srv.base_url, "m").run([Request([{"role": "user", "content": "q"}], Answer)])
    assert res.ok and len(srv.requests) == 1


@pytest.mark.slow
def test_fallback_on_unreachable_and_captioners_redo_on_rerun(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the CLI runs wrote paths relative to it
    s2_ready(tmp_path)
    base = ["compose.size=[128,128]", "compose.num_samples=1"]
    for stage in ("s2", "s3"):
        cli(tmp_path, f"stage={stage}", *base)
    result = cli(tmp_path, "stage=s4", "captioner=llm", *base, env={"OPENAI_API_KEY": ""}, check=False)
    assert result.returncode == 2 and "s4: OPENAI_API_KEY is not set" in result.stderr
    with LLMServer(lambda body, n: good_caption(body), models_status=401) as srv:  # refuses the key, for now
        cfg = make_cfg(tmp_path, "stage=s4", "captioner=vlm", *base, f"llm.base_url={srv.base_url}",
                       "llm.fallback_on_unreachable=true")
        first = s4_caption.run(cfg)
        assert first.done == 1 and "redone on rerun" in " ".join(first.notes) and not srv.requests
        [(folder, meta)] = list(done_items(tmp_path / "stages" / "s4_captions"))
        assert meta["redo"]
        assert json.loads((folder / "captions.json").read_text())["captioner"] == "template"
        srv.models_status = 200  # the key is fixed: the same config, and the item is done properly now
        again = s4_caption.run(cfg)
        third = s4_caption.run(cfg)
    assert (again.done, again.skipped) == (1, 0) and (third.done, third.skipped) == (0, 1)
    [(folder, meta)] = list(done_items(tmp_path / "stages" / "s4_captions"))
    assert "redo" not in meta and json.loads((folder / "captions.json").read_text())["captioner"] == "vlm:gpt-4o-mini"
