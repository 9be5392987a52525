import json
import time

import pytest
from pydantic import BaseModel

from gen4gen.llm.replies import ReplyInvalid, Request, extract_json
from tests.helpers.llm_server import LLMServer, Reply, chat_body, llm_client


class Answer(BaseModel):
    name: str
    count: int


def test_extract_json_tolerates_prose_and_fences():
    assert extract_json('Sure! ```json\n{"a": 1}\n``` hope it helps') == {"a": 1}
    assert extract_json('The layout is {"a": [1, 2]} as asked.') == {"a": [1, 2]}
    try:
        extract_json("no json here")
    except ReplyInvalid as e:
        assert "no JSON" in str(e)
    else:
        raise AssertionError


def test_retry_with_error_fed_back_then_success(tmp_path):
    def replies(body, n):
        return Reply('{"name": "cat"}') if n == 0 else Reply('{"name": "cat", "count": 2}')

    with LLMServer(replies) as srv:
        client = llm_client(srv.base_url, "m", cache_dir=tmp_path, max_retries=0)
        [res] = client.run([Request([{"role": "user", "content": "hi"}], Answer)])
        assert res.ok and res.value.count == 2 and res.attempts == 2
        assert "count" in srv.requests[1]["messages"][-1]["content"]  # the error went back to the model
        # cache hit: no new request
        [again] = client.run([Request([{"role": "user", "content": "hi"}], Answer)])
        assert again.cached and again.value == res.value and len(srv.requests) == 2


def test_retry_after_and_5xx_are_retried_and_concurrency_is_real(tmp_path):
    def replies(body, n):
        if n == 0:
            return Reply(status=429, headers={"Retry-After": "1"})
        if n == 1:
            return Reply(status=500)
        return Reply(json.dumps({"name": "x", "count": 1}), delay=0.2)

    with LLMServer(replies) as srv:
        client = llm_client(srv.base_url, "m", concurrency=8, max_retries=3)
        reqs = [Request([{"role": "user", "content": f"q{i}"}], Answer) for i in range(16)]
        t0 = time.perf_counter()
        results = client.run(reqs)
        assert all(r.ok for r in results)
        assert srv.max_in_flight > 1
        assert time.perf_counter() - t0 < 10


def test_timeout_is_a_recorded_failure(tmp_path):
    # the server answered once, so it is there: a later timeout is that request's failure, not a dead server
    with LLMServer(lambda body, n: Reply('{"name": "x", "count": 1}', delay=3 if n else 0)) as srv:
        client = llm_client(srv.base_url, "m", timeout=0.3, max_retries=0, concurrency=1)
        first, res = client.run([Request([{"role": "user", "content": q}], Answer) for q in ("q0", "q1")])
        assert first.ok and not res.ok and "Timeout" in res.errors[-1] and res.transport


def test_json_schema_rejected_falls_back_to_json_object(tmp_path):
    def replies(body, n):
        if body.get("response_format", {}).get("type") == "json_schema":
            return Reply(status=400)
        return Reply('{"name": "x", "count": 1}')

    with LLMServer(replies) as srv:
        client = llm_client(srv.base_url, "m", max_retries=0)
        [res] = client.run([Request([{"role": "user", "content": "q"}], Answer)])
        assert res.ok and not client.structured


def test_deeply_nested_json_is_an_invalid_reply_not_a_crash():
    deep = '{"name": ' + "[" * 100_000 + "]" * 100_000 + "}"
    try:
        extract_json(deep)
    except ReplyInvalid as e:
        assert "nested" in str(e)
    else:
        raise AssertionError

    def replies(body, n):
        return Reply(deep) if n == 0 else Reply('{"name": "x", "count": 1}')

    with LLMServer(replies) as srv:
        [res] = llm_client(srv.base_url, "m", max_retries=0).run([Request([{"role": "user", "content": "q"}], Answer)])
    assert res.ok and res.attempts == 2


def test_a_server_that_trickles_bytes_is_cut_off():
    with LLMServer(lambda body, n: Reply('{"name": "x", "count": 1}', trickle=0.2 if n else 0)) as srv:
        client = llm_client(srv.base_url, "m", timeout=0.5, max_retries=0, max_attempts=2, concurrency=1)
        t0 = time.perf_counter()
        _, res = client.run([Request([{"role": "user", "content": q}], Answer) for q in ("q0", "q1")])
    assert not res.ok and all("TimeoutError" in e for e in res.errors) and len(res.errors) == 2
    assert time.perf_counter() - t0 < 30  # a hang guard: each attempt is bounded at 2 x 0.5 s


@pytest.mark.parametrize("huge", ["declared length", "streamed without a length"])
def test_a_reply_past_max_reply_mb_is_cut_off_as_an_invalid_reply(huge):
    """Read no further than the limit (a 3 GB reply took 9 GB of memory): a declared length over it is refused
    before the body, a stream is cut where it passes it; the next attempt gets a good reply."""
    def replies(body, n):
        if n:
            return Reply('{"name": "x", "count": 1}')
        return Reply(raw=b'{"id": "' + b"x" * 3_000_000) if huge == "declared length" else Reply(stream_mb=200)

    with LLMServer(replies) as srv:
        [res] = llm_client(srv.base_url, "m", max_retries=0, max_reply_mb=1).run(
            [Request([{"role": "user", "content": "q"}], Answer)])
        time.sleep(0.2)  # the server's last write fails once the client has hung up
        taken = srv.streamed_mb
    assert res.ok and res.attempts == 2 and not res.transport
    assert res.errors == ["attempt 1: the reply passed 1 MB (llm.max_reply_mb): not read further"]
    assert taken < 20 if huge.startswith("streamed") else taken == 0  # of 200 MB: socket buffers at most

    with LLMServer(lambda body, n: Reply(stream_mb=50)) as srv:  # every reply too large: a fallback, not a dead server
        [res] = llm_client(srv.base_url, "m", max_retries=0, max_reply_mb=1, max_attempts=2).run(
            [Request([{"role": "user", "content": "q"}], Answer)])
    assert not res.ok and not res.transport and len(res.errors) == 2


def test_compressed_replies_are_decoded_under_the_limit_and_a_gzip_bomb_is_cut():
    """The limit counts decoded bytes: 50 KB of gzip that inflate to 50 MB stop at 1 MB; a good gzip or deflate
    reply reads as usual; an encoding that was not asked for is refused."""
    import gzip
    import zlib

    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = squeeze.compress(b'{"id": "') + squeeze.compress(b"x" * 50_000_000) + squeeze.flush()
    good = chat_body('{"name": "x", "count": 1}')
    sent = [Reply(raw=bomb, headers={"Content-Encoding": "gzip"}), Reply(raw=b"?", headers={"Content-Encoding": "br"}),
            Reply(raw=gzip.compress(good), headers={"Content-Encoding": "gzip"}),
            Reply(raw=zlib.compress(good), headers={"Content-Encoding": "deflate"})]
    with LLMServer(lambda body, n: sent[n]) as srv:
        client = llm_client(srv.base_url, "m", max_retries=0, max_reply_mb=1, max_attempts=3, concurrency=1)
        first, second = client.run([Request([{"role": "user", "content": q}], Answer) for q in ("q0", "q1")])
    assert len(bomb) < 100_000 and first.ok and first.attempts == 3 and second.ok and second.attempts == 1
    assert first.errors == ["attempt 1: the reply passed 1 MB (llm.max_reply_mb): not read further",
                            "attempt 2: the reply came in 'br', which was not asked for"]


def _completion(content, **extra) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m", **extra, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).encode()


GOOD = '{"name": "x", "count": 1}'


@pytest.mark.parametrize("raw, why", [
    (_completion(42), "the reply's message content is int, not text"),
    (_completion({"name": "x"}), "the reply's message content is dict, not text"),
    (_completion(True), "the reply's message content is bool, not text"),
    (b'{"choices": [42]}', "the reply has no choices[0].message"),
    (b'{"choices": "abc"}', "the reply has no choices[0].message"),
    (b'{"choices": []}', "the reply has no choices[0].message"),
    (b"[1, 2]", "the reply has no choices[0].message"),
    (b"null", "the reply has no choices[0].message"),
], ids=["int", "dict", "bool", "choice-int", "choices-str", "no-choices", "a-list", "null"])
def test_a_reply_of_the_wrong_shape_is_an_invalid_attempt_never_a_crash(raw, why):
    """openai builds the reply without validating it: any JSON can sit where the text should be."""
    with LLMServer(lambda body, n: Reply(raw=raw) if n == 0 else Reply(GOOD)) as srv:
        [res] = llm_client(srv.base_url, "m", max_retries=0).run([Request([{"role": "user", "content": "q"}], Answer)])
    assert res.ok and res.attempts == 2 and not res.transport and res.errors == [f"attempt 1: {why}"]


def test_content_parts_and_odd_usage_are_read():
    parts = [{"type": "text", "text": GOOD[:10]}, {"type": "image"}, {"type": "text", "text": GOOD[10:]}]
    sent = [Reply(raw=_completion(parts, usage={"prompt_tokens": 3, "total_tokens": "many"})),
            Reply(raw=_completion(GOOD, usage="lots"))]
    with LLMServer(lambda body, n: sent[n]) as srv:
        first, second = llm_client(srv.base_url, "m", max_retries=0, concurrency=1).run(
            [Request([{"role": "user", "content": q}], Answer) for q in ("q0", "q1")])
    assert first.ok and first.value.name == "x" and first.usage == {"prompt_tokens": 3}
    assert second.ok and second.usage == {}


def test_a_huge_unterminated_reply_is_rejected_without_reparsing_it_all():
    for hostile in ("[1," * 300_000, "{" + '"a": [' * 50_000, "x" * 5_000_000):
        try:
            extract_json(hostile)
        except ReplyInvalid:
            pass
        else:
            raise AssertionError(hostile[:20])
    assert extract_json("noise " * 1000 + '{"ok": true}') == {"ok": True}
