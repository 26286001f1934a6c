"""HTTP serving of a trained run (TIGER, LC-Rec or VQ-Rec) with FastAPI.

  GET  /health                       run kind, catalog size, queue depth
  POST /recommend {"history": [...], "k": 10, "sample_temperature"?: T, "seed"?: S, "epsilon"?: E,
                   "new_rule"?: "blend" | "neighbours" | "prefix" | "dense", "tau"?: W, "history_weight"?: H,
                   "new_slots"?: "compete" | "reserve"}
                                     -> {"items": [{"item", "score", "title", "new"}, ...]}
  POST /items     {"items": [{"item_id", "text", "title"?}, ...]}  cold-start items by text, no retraining
                  (generator and VQ-Rec runs; all or nothing: a bad request leaves the catalog unchanged)
  GET  /metrics                      Prometheus text format: requests by endpoint and status, latency
                                     histogram, queue depth, decode batch sizes

Concurrent ``/recommend`` requests are decoded together (serving/batcher.py: bounded wait, bounded queue,
503 when full or waited too long). User mistakes (unknown items, k too large, empty history, a repeated or
empty new item, cold start on published IDs, a history or k above the limits) answer 422 with the same
one-line message the CLI prints; a body above the size limit 413 (its bytes are counted as they arrive, so a
chunked or streamed body is held to the same limit), a body nested deeper than the depth limit or with more new
items than allowed 422. Every request is logged (``sidrec.access``: method, path, status, latency) unless
``access_log`` is off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, Field

from sidrec.errors import SidrecError
from sidrec.serving.batcher import Batcher, Overloaded, ServeConfig, torch_thread
from sidrec.serving.recommender import load_recommender


class RecommendRequest(BaseModel):
    history: list[str] = Field(default_factory=list, description="raw item ids, oldest first")
    k: int = 10
    beam: int = 0
    sample_temperature: float = Field(0.0, ge=0.0, description="0 = beam search; T > 0 = sample k distinct items")
    seed: int = 0
    epsilon: float = Field(0.0, ge=0.0, le=1.0, description="cold start: max share of new items in the top k")
    new_rule: Literal["blend", "neighbours", "prefix", "dense"] = Field(
        "blend", description="cold start: how new items are scored (generators)")
    tau: float = Field(0.1, gt=0.0, description="new_rule blend / neighbours: kernel width in cosine")
    history_weight: float = Field(0.5, ge=0.0, lt=1.0, description="new_rule blend: the history's share")
    new_slots: Literal["compete", "reserve"] = Field(
        "compete", description="cold start: new items enter by score, or always take their epsilon slots")


class NewItem(BaseModel):
    item_id: str
    text: str
    title: str | None = None


class NewItems(BaseModel):
    items: list[NewItem]


def _metrics():
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    reg = CollectorRegistry()  # one per app: several apps in one process (tests) do not collide
    return reg, {
        "requests": Counter("sidrec_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                            registry=reg),
        "latency": Histogram("sidrec_request_seconds", "request latency", ["endpoint"], registry=reg,
                             buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)),
        "queue": Gauge("sidrec_queue_depth", "recommend requests waiting for a decode", registry=reg),
        "batch": Histogram("sidrec_decode_batch_size", "requests per decode call", registry=reg,
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)),
    }


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
access_log = logging.getLogger("sidrec.access")


class JsonLines(logging.Formatter):
    """Structured logs: one JSON object per record (time, logger, message and the record's extra fields)."""

    FIELDS = ("method", "path", "status", "latency_ms")

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "logger": record.name,
                           "message": record.getMessage(),
                           **{k: getattr(record, k) for k in self.FIELDS if hasattr(record, k)}})


def configure_logging(fmt: str = "text", access: bool = True) -> None:
    """The server's log lines on stderr: ``text`` (time, then the message) or ``json`` (one object per line)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    for name in ("sidrec.access", "sidrec.serve"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(logging.INFO if access or name == "sidrec.serve" else logging.WARNING)
        lg.propagate = False


_NESTING = np.zeros(256, dtype=np.int64)  # +1 for [ and {, -1 for ] and }: one table lookup per byte
_NESTING[[ord("["), ord("{")]], _NESTING[[ord("]"), ord("}")]] = 1, -1


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays / objects in a JSON text (strings skipped), without parsing it."""
    if not body:
        return 0
    b = np.frombuffer(_STRING.sub(b'""', body), dtype=np.uint8)
    return int(np.cumsum(_NESTING[b]).max(initial=0))


class BodyLimit:
    """ASGI middleware: reads a request body as it arrives and answers 413 once it passes ``limit`` bytes (a
    Content-Length above the limit at once; a chunked body when its bytes do), 422 when nested deeper than
    ``depth``; the app then gets the body whole."""

    def __init__(self, app, limit: int, depth: int):
        self.app, self.limit, self.depth = app, limit, depth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await self._reject(send, 413, f"request body of {int(length)} bytes is above the limit of "
                                                 f"{self.limit}")
        body, more = bytearray(), True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.limit:
                return await self._reject(send, 413, f"request body above the limit of {self.limit} bytes "
                                                     f"(counted as it arrived)")
        if json_depth(bytes(body)) > self.depth:
            return await self._reject(send, 422, f"request body nested deeper than {self.depth} levels")
        done = False

        async def replay():
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(send, status: int, detail: str) -> None:
        payload = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def _decoder(rec):
    """decode(batch): one decode call for requests that share a key (or one request alone); an error per
    request."""
    def decode(batch: list[dict]) -> list:
        if len(batch) > 1:
            try:
                return rec.recommend_batch([b["history"] for b in batch], [b["k"] for b in batch], batch[0]["beam"])
            except SidrecError:  # e.g. the catalog changed under a request: answer each one alone
                pass
        out = []
        for b in batch:
            try:
                out.append(rec.recommend(b["history"], k=b["k"], beam=b["beam"],
                                         sample_temperature=b["sample_temperature"], seed=b["seed"],
                                         epsilon=b["epsilon"], new_rule=b["new_rule"], tau=b["tau"],
                                         history_weight=b["history_weight"], new_slots=b["new_slots"]))
            except SidrecError as e:
                out.append(e)
        return out

    return decode


class Measure:
    """Counts, times and (``access_log``) logs every request. A plain ASGI middleware: Starlette's
    ``@app.middleware("http")`` runs each request through an extra task and stream, a cost per request that the
    server's one event loop pays for every request."""

    PATHS = ("/recommend", "/items", "/health", "/metrics")

    def __init__(self, app, m: dict, cfg: ServeConfig):
        self.app, self.m, self.cfg = app, m, cfg

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - t0
            method, raw = scope["method"], scope["path"]
            path = raw if raw in self.PATHS else "other"
            self.m["requests"].labels(path, str(status[0])).inc()
            self.m["latency"].labels(path).observe(seconds)
            if self.cfg.access_log:
                access_log.info("%s %s %d %.1f ms", method, raw, status[0], seconds * 1e3,
                                extra={"method": method, "path": raw, "status": status[0],
                                       "latency_ms": round(seconds * 1e3, 2)})


def create_app(run: str | Path, device: str = "cpu", cfg: ServeConfig | None = None) -> FastAPI:
    cfg = cfg or ServeConfig()
    pool = torch_thread()  # every torch call of the server runs on this one thread (see Batcher)
    rec = pool.submit(load_recommender, run, device=device).result()
    app = FastAPI(title="sidrec", description=f"recommendations from {run}")
    app.state.recommender = rec
    reg, m = _metrics()

    decode = _decoder(rec)
    batcher = Batcher(decode, cfg, on_batch=m["batch"].observe, pool=pool)
    m["queue"].set_function(batcher.depth)

    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes, depth=cfg.max_depth)

    app.add_middleware(Measure, m=m, cfg=cfg)  # added after BodyLimit, so it wraps it: 413s are counted too

    @app.get("/health")
    def health() -> dict:
        return {"run": str(run), "kind": rec.kind, "items": rec.n_items, "queue": batcher.depth()}

    @app.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)

    @app.post("/recommend")
    async def recommend(req: RecommendRequest) -> dict:
        if len(req.history) > cfg.max_history:
            raise HTTPException(422, f"history of {len(req.history)} items is above the limit of {cfg.max_history}")
        if req.k > cfg.max_k or req.beam > cfg.max_k:
            raise HTTPException(422, f"k={req.k}" + (f", beam={req.beam}" if req.beam else "") +
                                f": the limit is {cfg.max_k}")
        try:
            rec.check(req.history, req.k)
        except SidrecError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        args = req.model_dump()
        key = ("beam", max(req.beam or 20, req.k)) if rec.batchable(**args) else None
        try:
            items = await batcher.submit(key, args)
        except Overloaded as e:
            raise HTTPException(status_code=503, detail=str(e)) from None
        except SidrecError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        return {"items": items}

    @app.post("/items")
    async def add_items(req: NewItems) -> dict:
        if len(req.items) > cfg.max_new_items:
            raise HTTPException(422, f"{len(req.items)} new items in one request: the limit is {cfg.max_new_items}")
        try:  # on the torch thread, between decodes (the catalog swap itself is atomic)
            await asyncio.get_running_loop().run_in_executor(
                pool, rec.add_items, [i.item_id for i in req.items], [i.text for i in req.items],
                [i.title or i.text for i in req.items])
        except SidrecError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        return {"added": len(req.items), "items": rec.n_items}

    return app
