"""`sidrec serve` under load: concurrent requests are decoded together and answer what one-at-a-time requests
answer; the queue is bounded (503 at once when full, 503 after the queue timeout); size limits; /metrics."""

import asyncio
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from sidrec.serving.batcher import Batcher, Overloaded, ServeConfig  # noqa: E402


def _histories(ds, n):
    ids = ds.items["item_id"].astype(str).tolist()
    return [[ids[(7 * i + j) % len(ids)] for j in range(1 + i % 5)] for i in range(n)]


def test_concurrent_answers_equal_one_at_a_time(tiger_run):
    import httpx

    from sidrec.serving.app import create_app
    from sidrec.serving.recommender import load_recommender

    ds = tiger_run["ds"]
    hists = _histories(ds, 48)
    ks = [5 + i % 11 for i in range(48)]  # different k in one batch: each gets its own prefix of the lists
    alone = load_recommender(tiger_run["run"])
    want = [alone.recommend(h, k=k) for h, k in zip(hists, ks)]
    app = create_app(tiger_run["run"], cfg=ServeConfig(max_batch=16, max_wait_ms=20))

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            rs = await asyncio.gather(*[c.post("/recommend", json={"history": h, "k": k}) for h, k in zip(hists, ks)],
                                      c.post("/recommend", json={"history": ["nope"], "k": 5}),
                                      c.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}))
            return rs, (await c.get("/metrics")).text

    rs, metrics = asyncio.run(go())
    assert [r.status_code for r in rs] == [200] * 48 + [422, 422]
    for r, w in zip(rs, want):
        got = r.json()["items"]
        assert [x["item"] for x in got] == [x["item"] for x in w]
        assert [x["score"] for x in got] == pytest.approx([x["score"] for x in w], abs=1e-4)
    # batched: fewer decode calls than requests, and the counters saw every request
    calls = float(next(line.split()[-1] for line in metrics.splitlines()
                       if line.startswith("sidrec_decode_batch_size_count")))
    assert calls < 48 / 2, metrics
    assert 'sidrec_requests_total{endpoint="/recommend",status="200"} 48.0' in metrics
    assert 'sidrec_requests_total{endpoint="/recommend",status="422"} 2.0' in metrics
    assert "sidrec_request_seconds_bucket" in metrics and "sidrec_queue_depth" in metrics


def test_limits_answer_422_and_413(tiger_run):
    from fastapi.testclient import TestClient

    from sidrec.serving.app import create_app

    ds = tiger_run["ds"]
    c = TestClient(create_app(tiger_run["run"], cfg=ServeConfig(max_history=50, max_k=30, max_body_bytes=4000)))
    first = ds.items["item_id"].astype(str).iloc[0]
    r = c.post("/recommend", json={"history": [first] * 51, "k": 5})
    assert r.status_code == 422 and "limit of 50" in r.json()["detail"]
    r = c.post("/recommend", json={"history": [first], "k": 31})
    assert r.status_code == 422 and "limit is 30" in r.json()["detail"]
    r = c.post("/recommend", content=b'{"history": [' + b'"x",' * 2000 + b'"x"]}',
               headers={"content-type": "application/json"})
    assert r.status_code == 413
    for bad in ({"history": [first], "k": 0}, {"history": []}, {"history": [first], "k": 10**6}):
        assert c.post("/recommend", json=bad).status_code == 422
    assert c.post("/recommend", json={"history": [first], "k": 3}).status_code == 200
    assert c.get("/health").json()["queue"] == 0


def test_queue_is_bounded_and_waits_are_capped():
    """A full queue answers at once; a request whose batch did not start within the timeout answers 503."""
    gate = threading.Event()

    def decode(batch):
        gate.wait(5)
        return [a["x"] for a in batch]

    async def go():
        b = Batcher(decode, ServeConfig(max_batch=2, max_wait_ms=1, max_queue=3, queue_timeout_s=0.2))
        first = asyncio.ensure_future(b.submit("k", {"x": 0}))
        await asyncio.sleep(0.05)  # the worker holds request 0 in a (blocked) decode
        rest = [asyncio.ensure_future(b.submit("k", {"x": i})) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        full = [f for f in rest if f.done()]  # requests 4 and 5 found the queue (3) full: answered at once
        assert len(full) == 2 and all(isinstance(f.exception(), Overloaded) for f in full)
        await asyncio.sleep(0.3)  # 1-3 now waited longer than the queue timeout
        t0 = time.monotonic()
        gate.set()
        out = await asyncio.gather(first, *rest[:3], return_exceptions=True)
        assert out[0] == 0
        assert all(isinstance(o, Overloaded) and "queue" in str(o) for o in out[1:])
        assert time.monotonic() - t0 < 1.0
        b2 = Batcher(lambda batch: [a["x"] * 10 for a in batch], ServeConfig(max_batch=8, max_wait_ms=30))
        got = await asyncio.gather(*[b2.submit("k", {"x": i}) for i in range(5)])
        assert got == [0, 10, 20, 30, 40]

    asyncio.run(go())
