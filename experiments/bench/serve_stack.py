"""The serving stack's own cost per request: `POST /recommend` through the whole app (body limit, metrics and
access-log middleware, request validation, the request checks, the batcher, the JSON answer) with the decode
replaced by a fixed answer, in process (no network, no uvicorn), at a given concurrency. On a GPU the decode of a
batch takes tens of milliseconds, so what the one event loop spends per request bounds the throughput.

    python experiments/bench/serve_stack.py RUN --results experiments/results [--concurrency 64] [--requests 3000]

Rows (bench `serve-stack`): variant (a label, --variant), concurrency, requests, repeats, throughput (requests/s,
the median of the repeats; the in-process client's cost included), us_per_request.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import httpx
import numpy as np
from sidrec.results import write_bench
from sidrec.serving.app import create_app
from sidrec.serving.batcher import ServeConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", default="current")
    ap.add_argument("--results", default=None)
    a = ap.parse_args()
    logging.getLogger("sidrec.access").disabled = True  # each line is still formatted, as in a server
    app = create_app(a.run, "cpu", ServeConfig(access_log=True))
    rec = app.state.recommender
    ids = list(rec.ids)
    answer = rec.recommend_batch([[ids[0]]], [10])[0]
    rec.recommend_batch = lambda histories, ks, beam=0: [answer[:k] for k in ks]  # the decode, stubbed
    rng = np.random.default_rng(0)
    bodies = [{"history": [ids[j] for j in rng.integers(0, len(ids), int(rng.integers(1, 21)))], "k": 10}
              for _ in range(a.requests)]

    async def drive() -> float:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
            queue = list(bodies)

            async def worker():
                while queue:
                    r = await client.post("/recommend", json=queue.pop())
                    if r.status_code != 200:
                        raise SystemExit(f"/recommend answered {r.status_code}: {r.text}")

            t = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(a.concurrency)])
            return len(bodies) / (time.perf_counter() - t)

    runs = sorted(asyncio.run(drive()) for _ in range(a.repeats))
    tput = runs[len(runs) // 2]
    row = {"variant": a.variant, "concurrency": a.concurrency, "requests": a.requests, "repeats": a.repeats,
           "throughput": round(tput, 1), "us_per_request": round(1e6 / tput, 1), "device": "cpu"}
    for r in write_bench("serve-stack", [row], a.results):
        print(r)


if __name__ == "__main__":
    main()
