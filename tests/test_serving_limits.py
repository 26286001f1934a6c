"""A real `sidrec serve` process on loopback under hostile bodies (bounded): oversized with and without a
Content-Length, chunked, deeply nested, wrong-typed and truncated; each gets a 4xx and the server stays alive. The
server says what it does: a startup line and an access log (text or JSON lines)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiger_run, tmp_path_factory):
    port = _port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "sidrec", "--threads", "1", "serve", str(tiger_run["run"]),
                                 "--port", str(port), "--max-body", "4096", "--max-k", "50", "--max-new-items", "3",
                                 "--log-format", "json"], stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.25)
    else:
        proc.kill()
        pytest.fail("server did not start: " + log.read_text()[-2000:])
    yield url, log, tiger_run["ds"].items["item_id"].astype(str).tolist()
    proc.terminate()
    proc.wait(20)


def _alive(url):
    assert httpx.get(url + "/health", timeout=5).status_code == 200


def test_hostile_bodies_get_4xx_and_the_server_lives(server):
    url, log, ids = server
    big = json.dumps({"history": [ids[0]] * 2000, "k": 5}).encode()  # > 4096 bytes

    def chunks():
        for i in range(0, len(big), 512):
            yield big[i:i + 512]

    cases = {
        "oversized, Content-Length": (lambda: httpx.post(url + "/recommend", content=big,
                                                         headers={"content-type": "application/json"}), 413),
        "oversized, chunked": (lambda: httpx.post(url + "/recommend", content=chunks(),
                                                  headers={"content-type": "application/json"}), 413),
        "deeply nested": (lambda: httpx.post(url + "/recommend", content=b'{"history": ' + b"[" * 200 + b"]" * 200 + b"}",
                                             headers={"content-type": "application/json"}), 422),
        "wrong type: history": (lambda: httpx.post(url + "/recommend", json={"history": 5, "k": 5}), 422),
        "wrong type: k": (lambda: httpx.post(url + "/recommend", json={"history": [ids[0]], "k": "ten"}), 422),
        "truncated JSON": (lambda: httpx.post(url + "/recommend", content=b'{"history": ["' + ids[0].encode(),
                                              headers={"content-type": "application/json"}), 422),
        "not JSON": (lambda: httpx.post(url + "/recommend", content=b"\x00\xff garbage",
                                        headers={"content-type": "application/json"}), 422),
        "k above the limit": (lambda: httpx.post(url + "/recommend", json={"history": [ids[0]], "k": 1000000}), 422),
        "empty history": (lambda: httpx.post(url + "/recommend", json={"history": [], "k": 5}), 422),
        "too many new items": (lambda: httpx.post(url + "/items", json={"items": [
            {"item_id": f"n{i}", "text": "red lipstick"} for i in range(4)]}), 422),
    }
    answers = {}
    for name, (send, want) in cases.items():
        r = send()
        answers[name] = (r.status_code, r.json().get("detail") if r.headers.get("content-type", "").startswith(
            "application/json") else r.text[:80])
        assert r.status_code == want, (name, r.status_code, r.text[:300])
        _alive(url)
    assert "k=1000000: the limit is 50" in answers["k above the limit"][1]
    assert "--history" not in answers["empty history"][1]
    assert "counted as it arrived" in answers["oversized, chunked"][1]
    r = httpx.post(url + "/recommend", json={"history": ids[:3], "k": 5})  # and a valid request still answers
    assert r.status_code == 200 and len(r.json()["items"]) == 5


def test_the_server_says_what_it_does(server):
    url, log, ids = server
    httpx.post(url + "/recommend", json={"history": ids[:2], "k": 3})
    time.sleep(0.3)
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    start = next(x for x in lines if x["logger"] == "sidrec.serve")
    assert url.split("//")[1] in start["message"] and "tiger" in start["message"] and "items" in start["message"]
    assert "body 4,096 bytes" in start["message"] and "access log on" in start["message"]
    access = [x for x in lines if x["logger"] == "sidrec.access"]
    rec = next(x for x in access if x["path"] == "/recommend" and x["status"] == 200)
    assert rec["method"] == "POST" and rec["latency_ms"] > 0
    assert any(x["status"] == 413 for x in access)  # rejected bodies are logged too
