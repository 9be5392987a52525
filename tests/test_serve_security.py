"""stage=serve is safe by default: no request path reads outside the served folders, other hosts need the
token on every request, a POST from another origin is refused, a rebinding Host is refused, and pages
escape what they print (the scripts' escaping is tested in Chromium, tests/test_serve_browser.py)."""
from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient

from gen4gen.serve.review import REVIEW_FILE
from gen4gen.serve.security import COOKIE, make_token
from gen4gen.stages.serve import build
from tests.helpers.serve_fixtures import bench_run, search_samples, serve_cfg, stages_tree

BASE = "http://127.0.0.1:8765"
PETS = "pets/cat+dog_000/v0_procedural"
SECRET = "root:x:0:0"  # /etc/passwd's first line


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_sec")
    stages_tree(root, variants=("v0_procedural",))
    run = bench_run(root)
    search_samples(root)
    (root / "outside.png").write_bytes((run / "images/mid/drawbench/p0_s0.png").read_bytes())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rows[0]["image"] = "../../outside.png"  # a hostile table row naming a file outside the run
    rows[1]["image"] = "/etc/passwd"
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def reader(tree):
    """One app for the tests that only read."""
    return app_client(tree)[0]


def app_client(root, *overrides, base=BASE):
    app, served, token = build(serve_cfg(root, f"serve.bench_run={root / 'bench' / 'tiny'}",
                                         f"serve.search_index={root / 'samples'}", *overrides))
    return TestClient(app, base_url=base), served, token


TRAVERSALS = ["/media/image/../../../../etc/passwd", "/media/image/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
              "/media/image/..%2f..%2f..%2f..%2fetc%2fpasswd", "/media/thumb/%2fetc%2fpasswd",
              "/media/image//etc/passwd", "/media/cutout/0/..%2F..%2F..%2Fetc%2Fpasswd", "/media/cutout/-1/" + PETS,
              "/media/cutout/99/" + PETS, "/media/bench/-1", "/media/bench/99999", "/media/bench/..%2f..%2fetc%2fpasswd",
              "/media/sample/0/..%2f..%2f..%2fetc%2fpasswd", "/media/sample/0/../../../../etc/passwd",
              "/media/sample/9/crimson", "/static/../review.py", "/static/%2e%2e/review.py", "/static/..%2freview.py",
              "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/media/composed/" + PETS + "/../../../../../etc/passwd",
              "/api/items/..%2f..%2f..%2fetc%2fpasswd/detail"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_request_path_reads_outside_the_served_folders(reader, path):
    r = reader.get(path)
    assert r.status_code in (404, 422), (path, r.status_code)
    assert SECRET not in r.text and "def router" not in r.text and "import" not in r.text


def test_bench_rows_naming_files_outside_the_run_are_not_served(reader):
    c = reader
    board = c.get("/api/leaderboard").json()
    assert sum("outside the run folder" in n for n in board["notes"]) == 2
    assert c.get("/media/bench/0").status_code == 404 and c.get("/media/bench/1").status_code == 404
    assert c.get("/media/bench/2").status_code == 200  # the rows' other images still are


def test_a_rebinding_host_header_is_refused(tree):
    c, _, _ = app_client(tree, base="http://evil.example:8765")
    r = c.get("/api/items")
    assert r.status_code == 403 and "host" in r.json()["detail"]
    for ok in ("http://localhost:8765", "http://127.0.0.1:9", "http://[::1]:8765", "http://127.0.0.2"):
        assert app_client(tree, base=ok)[0].get("/api/items").status_code == 200


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Origin": "http://127.0.0.1:9999"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "same-site"}])
def test_a_post_from_another_origin_is_refused_and_writes_nothing(tree, tmp_path, headers):
    root = tmp_path / "t"
    shutil.copytree(tree, root)
    c, _, _ = app_client(root)
    r = c.post(f"/api/items/{PETS}/review", json={"status": "reject"}, headers=headers)
    assert r.status_code == 403 and not (root / "stages" / REVIEW_FILE).exists()
    # a form post (text/plain, the only body another site can send without asking) is no JSON either
    assert c.post(f"/api/items/{PETS}/review", content=b'{"status": "reject"}',
                  headers={"Content-Type": "text/plain"}).status_code == 422
    ok = c.post(f"/api/items/{PETS}/review", json={"status": "reject"},
                headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200 and (root / "stages" / REVIEW_FILE).exists()


def test_another_host_needs_the_token_on_every_request(tree, capsys):
    assert make_token("127.0.0.1", None) is None and make_token("::1", None) is None
    assert make_token("127.0.0.1", "set") == "set"
    made = make_token("0.0.0.0", None)
    assert made and len(made) >= 32 and made != make_token("0.0.0.0", None)
    c, _, token = app_client(tree, "serve.host=0.0.0.0", base="http://192.168.1.20:8765")
    assert token and len(token) >= 32
    for path in ("/", "/api/items", "/static/serve.css", f"/media/image/{PETS}", "/api/leaderboard", "/api/search?text=x"):
        assert c.get(path).status_code == 403, path
    assert c.get("/api/items", params={"token": token[:-1] + "x"}).status_code == 403
    assert c.get("/api/items", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    first = c.get("/", params={"token": token})  # the printed address: the cookie carries the token from here on
    assert first.status_code == 200 and f"{COOKIE}={token}" in first.headers["set-cookie"]
    assert "httponly" in first.headers["set-cookie"].lower() and "samesite=strict" in first.headers["set-cookie"].lower()
    assert c.get("/api/items").status_code == 200  # the client kept the cookie
    c.cookies.clear()
    assert c.get("/api/items").status_code == 403
    configured, _, t2 = app_client(tree, "serve.token=s3cret-token-for-tests", base="http://127.0.0.1:8765")
    assert t2 == "s3cret-token-for-tests" and configured.get("/api/items").status_code == 403


def test_pages_escape_what_they_print_and_send_a_strict_policy(tmp_path, tree):
    root = tmp_path / 'x"><script>alert(1)</script>'
    shutil.copytree(tree, root)
    cfg = serve_cfg(tree, "serve.search_index=null")
    cfg.paths.stages_dir = str(root / "stages")  # a name Hydra's command line cannot even spell
    c = TestClient(build(cfg)[0], base_url=BASE)
    page = c.get("/")
    assert page.status_code == 200 and "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for name in ("leaderboard", "search"):
        assert "<script>alert(1)</script>" not in c.get(f"/{name}").text
    # nothing on any page is loaded from outside the machine
    for path in ("/", "/leaderboard", "/search"):
        assert "http://" not in c.get(path).text and "https://" not in c.get(path).text
