"""Serving under load: a real `sidrec serve` process on loopback, a bounded load at
concurrency 1 / 8 / 64 (a fixed number of requests each), latency percentiles and throughput; then the same
load with a share of malformed requests, which must get 4xx while the others answer as before.

    python experiments/bench/serve_load.py RUN 
    python experiments/bench/serve_load.py RUN --max-batch 1       # no batching: the baseline in the same run

Rows: {"concurrency", "requests", "throughput" (requests/s), "p50_ms", "p95_ms", "p99_ms", "errors_4xx",
"errors_5xx", "device", "max_batch", "malformed", "mismatches"}; ``mismatches`` counts valid answers that
differ from the one-at-a-time answer of the same request (item lists).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sidrec.results import write_bench


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_for(items: list[str], n: int, malformed: float, seed: int) -> list[tuple[str, object]]:
    """(kind, body): histories of 1-20 real items, k 10; a share of malformed ones of four kinds."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if rng.random() < malformed:
            kind = ["unknown", "k0", "empty", "notjson"][i % 4]
            body = {"unknown": {"history": ["no-such-item"], "k": 10}, "k0": {"history": [items[0]], "k": 0},
                    "empty": {"history": [], "k": 10}, "notjson": b"{history: oops"}[kind]
            out.append((kind, body))
        else:
            h = [items[j] for j in rng.integers(0, len(items), int(rng.integers(1, 21)))]
            out.append(("ok", {"history": h, "k": 10}))
    return out


def _request(body, port: int) -> bytes:
    """One pre-encoded HTTP/1.1 POST /recommend (keep-alive)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (f"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def drive(url: str, reqs, concurrency: int):
    """``concurrency`` keep-alive connections, each sending its next request when the last answer is in. A
    bare asyncio HTTP/1.1 client with pre-encoded requests: on a 2-core machine the load generator shares
    the CPU with the server, and httpx's per-request cost (~5 ms) would throttle the load it offers."""
    port = int(url.rsplit(":", 1)[1])
    raw = [_request(body, port) for _, body in reqs]
    lat, status, answers = [0.0] * len(reqs), [0] * len(reqs), [None] * len(reqs)
    nxt = iter(range(len(reqs)))

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in nxt:
                t0 = time.perf_counter()
                writer.write(raw[i])
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                code = int(lines[0].split()[1])
                size = next(int(x.split(":", 1)[1]) for x in lines if x.lower().startswith("content-length:"))
                body = await reader.readexactly(size)
                lat[i], status[i] = time.perf_counter() - t0, code
                if code == 200:
                    answers[i] = [x["item"] for x in json.loads(body)["items"]]
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall = time.perf_counter() - t0
    return wall, np.array(lat), np.array(status), answers


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--malformed", type=float, default=0.1, help="share of malformed requests in the second pass")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the server (default: its own rule)")
    ap.add_argument("--results", type=Path, default=Path("experiments/results"), help="results folder: rows are appended to RESULTS/bench-serve.jsonl")
    a = ap.parse_args()

    import httpx
    import pandas as pd

    items = pd.read_parquet(a.run / "items.parquet")["item_id"].astype(str).tolist()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "sidrec"] + (["--threads", str(a.threads)] if a.threads else []) + [
        "serve", str(a.run), "--port", str(port), "--device", a.device, "--max-batch", str(a.max_batch)]
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-load-{port}.log", "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    rows = []
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise SystemExit("server did not start")
        base = requests_for(items, a.requests, 0.0, seed=0)
        # the reference: every valid request alone (concurrency 1 is also the first measured row)
        for mal in (0.0, a.malformed):
            reqs = base if mal == 0 else requests_for(items, a.requests, mal, seed=1)
            ref = None
            for c in [int(x) for x in a.concurrency.split(",")]:
                asyncio.run(drive(url, reqs[: min(8, len(reqs))], c))  # warm-up
                wall, lat, status, answers = asyncio.run(drive(url, reqs, c))
                if ref is None:
                    ref = answers if c == 1 else asyncio.run(drive(url, reqs, 1))[3]
                ok = np.array([k == "ok" for k, _ in reqs])
                mism = sum(1 for i in range(len(reqs)) if ok[i] and answers[i] != ref[i])
                row = {"concurrency": c, "requests": len(reqs), "throughput": round(len(reqs) / wall, 2),
                       "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 1),
                       "p95_ms": round(float(np.percentile(lat, 95)) * 1e3, 1),
                       "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 1),
                       "errors_4xx": int(((status >= 400) & (status < 500)).sum()),
                       "errors_5xx": int((status >= 500).sum()), "malformed": int((~ok).sum()),
                       "malformed_not_4xx": int((~ok & ~((status >= 400) & (status < 500))).sum()),
                       "valid_not_200": int((ok & (status != 200)).sum()), "mismatches": mism,
                       "device": a.device, "max_batch": a.max_batch}
                print(json.dumps(row), flush=True)
                rows.append(row)
        metrics = httpx.get(url + "/metrics").text
        batches = [ln for ln in metrics.splitlines() if ln.startswith("sidrec_decode_batch_size_")]
        print("\n".join(batches))
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    warnings = sum("Warning" in ln for ln in open(log.name))
    res = {"run": str(a.run), "items": len(items), "server_log_warning_lines": warnings, "rows": rows}
    write_bench('serve', res, a.results, variant=lambda r: "batched" if r.get("max_batch", 1) > 1 else "unbatched")


if __name__ == "__main__":
    main()
