"""Request batching for ``sidrec serve``: concurrent ``/recommend`` requests are decoded together.

Requests are checked at once (unknown items, k, sizes: 422 before queueing) and put on a bounded queue; a
full queue answers 503 at once (never an unbounded backlog). One worker takes the first waiting request,
takes the requests queued behind it (those that arrived during the previous decode; optionally waiting up to
``max_wait_ms`` for more), up to ``max_batch``, and decodes the whole batch in one call of the
recommender (one beam search for all users of the same beam width) on one decode thread, so the model never
runs in several threads at once. A request that waited longer than ``queue_timeout_s`` before its batch
started answers 503: no request waits longer than the queue timeout plus one decode. Requests the batch path
cannot serve together (sampling, cold-start epsilon with new items, VQ-Rec runs) take the same queue and
thread one at a time.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    max_batch: int = 64  # requests decoded together
    max_wait_ms: float = 0.0  # how long a batch's first request waits for others (0: it takes what queued up
    # while the previous decode ran, and goes: no added latency when idle, full batches under load)
    max_queue: int = 256  # waiting requests; one more answers 503 at once
    queue_timeout_s: float = 10.0  # a request whose batch has not started by then answers 503
    max_history: int = 10_000  # items per request history (more: 422)
    max_k: int = 1_000  # largest k (and beam) a request may ask for (more: 422)
    max_body_bytes: int = 1 << 20  # request bodies above this answer 413 (counted as they arrive: chunked too)
    max_depth: int = 16  # JSON nesting depth of a request body (more: 422)
    max_new_items: int = 10_000  # items per POST /items (more: 422)
    access_log: bool = True  # one log line per request: method, path, status, latency


def torch_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidrec-torch")


class Overloaded(Exception):
    """Queue full or waited too long: the server answers 503."""


@dataclass
class _Job:
    key: Any  # requests with the same key decode in one call; None = alone
    args: dict
    future: asyncio.Future
    t0: float


class Batcher:
    """``await submit(key, args)`` -> the recommender's answer. ``decode(list_of_args) -> list_of_answers``
    (exceptions per answer allowed) runs on one thread for each batch of jobs that share a key."""

    def __init__(self, decode, cfg: ServeConfig, on_batch=lambda n: None, pool: ThreadPoolExecutor | None = None):
        """``pool``: the one-thread executor that runs every torch call of the server (model loading
        included): torch work spread over several threads made each decode 2-3x slower on a 2-core CPU
        (each thread brings its own OpenMP team)."""
        self.decode, self.cfg, self.on_batch = decode, cfg, on_batch
        self.queue: asyncio.Queue[_Job] | None = None
        self.pool = pool or torch_thread()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def depth(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._loop is not loop or self._task.done():
            # in the server's event loop, on the first request (a test client may run each request in a loop
            # of its own: the queue and the worker follow the loop)
            self.queue = asyncio.Queue(maxsize=self.cfg.max_queue)
            self._loop, self._task = loop, loop.create_task(self._worker())

    async def submit(self, key, args: dict):
        self._start()
        job = _Job(key, args, asyncio.get_running_loop().create_future(), time.monotonic())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise Overloaded(f"server busy: {self.cfg.max_queue} requests already waiting; retry later") from None
        return await job.future

    async def _collect(self) -> list[_Job]:
        first = await self.queue.get()
        jobs = [first]
        await asyncio.sleep(0)  # let the handlers of requests that arrived with it enqueue them
        deadline = time.monotonic() + self.cfg.max_wait_ms / 1000
        while len(jobs) < self.cfg.max_batch:
            left = deadline - time.monotonic()
            try:
                jobs.append(self.queue.get_nowait() if left <= 0 else await asyncio.wait_for(self.queue.get(), left))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
        return jobs

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            now = time.monotonic()
            live = []
            for j in jobs:
                if now - j.t0 > self.cfg.queue_timeout_s:
                    j.future.set_exception(Overloaded(f"waited {now - j.t0:.1f} s in the queue (limit "
                                                      f"{self.cfg.queue_timeout_s:g} s); retry later"))
                else:
                    live.append(j)
            groups: dict[Any, list[_Job]] = {}
            for j in live:
                groups.setdefault(j.key if j.key is not None else id(j), []).append(j)
            for group in groups.values():
                self.on_batch(len(group))
                try:
                    answers = await loop.run_in_executor(self.pool, self.decode, [j.args for j in group])
                except Exception as e:  # noqa: BLE001  (the batch failed as a whole: every request learns why)
                    answers = [e] * len(group)
                for j, a in zip(group, answers):
                    if j.future.done():
                        continue
                    if isinstance(a, BaseException):
                        j.future.set_exception(a)
                    else:
                        j.future.set_result(a)
