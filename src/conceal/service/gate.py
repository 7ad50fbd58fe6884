"""Bounded concurrency for inference: a fixed number of requests run at once, a short queue waits, the rest hear 503.

A request takes a place (``admit``) before its body is read, so the memory held by uploads is bounded by
(workers + queue) x the upload limit however many clients connect; it runs its CPU work on one of the
``workers`` threads (``run``), never on the event loop, so /health and the page stay responsive under load.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor


class Busy(Exception):
    """Every worker is busy and the queue is full: answer 503 with Retry-After."""


class InferenceGate:
    def __init__(self, workers: int = 1, queue: int = 4):
        if workers < 1 or queue < 0:
            raise ValueError(f"workers must be 1 or more and queue 0 or more, not {workers} and {queue}")
        self.workers, self.queue = workers, queue
        self.admitted = 0  # running + waiting; only touched on the event loop's thread
        self._pool: ThreadPoolExecutor | None = None  # made on first use, so an app can start again after shutdown

    @property
    def capacity(self) -> int:
        return self.workers + self.queue

    @contextlib.contextmanager
    def admit(self):
        """Hold one of ``workers + queue`` places for the request's lifetime, or raise ``Busy`` at once."""
        if self.admitted >= self.capacity:
            raise Busy(f"all {self.workers} workers are busy and {self.queue} requests are waiting; retry shortly")
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def run(self, fn, *args):
        """``fn(*args)`` on a worker thread (the pool's own queue orders the waiting requests)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="conceal-inference")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
