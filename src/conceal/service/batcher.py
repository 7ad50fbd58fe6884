"""Micro-batching: the aligned faces of concurrent requests go through the model in one call.

A model call on one 64 px face costs about as much as on eight (benchmarks/SERVICE.md: ~3x less per face
at batch 8 than at 1), so while several requests are in flight, each worker thread hands its faces to
``ModelBatcher.release`` instead of calling the model itself. One batcher thread gathers the faces of
every request that reaches the model within ``max_wait_s`` of the first (at most ``max_faces``), runs each
(model, options) group in one call and hands every request its own rows back.

It waits only for requests that are known to be coming: a request announces itself (``expect``) before it
decodes and detects, so a lone request, or the last of a burst, goes straight to the model. The rows a
request gets back depend on how many faces shared its call (CPU kernels block by batch size: at most 1
level in a few pixels), never on the other faces' content.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Call:
    model: object  # a ModelAPI
    crops: np.ndarray  # (N, S, S, 3) uint8
    options: dict
    result: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple:
        """Calls with equal keys can share one model call: the same model and the same ``apply`` options."""
        return id(self.model), tuple(sorted((k, repr(v)) for k, v in self.options.items()))


class Ticket:
    """One request's way to the model (``ModelBatcher.request``)."""

    def __init__(self, batcher: "ModelBatcher"):
        self._batcher, self._expected = batcher, True

    def _arrived(self) -> None:
        """The request reached the model or left: a gathering batch stops waiting for it."""
        if self._expected:
            self._expected = False
            with self._batcher._changed:
                self._batcher._expected -= 1
                self._batcher._changed.notify_all()

    def release(self, model, crops: np.ndarray, **options) -> np.ndarray:
        """``model.apply(crops, **options)`` (crops (N, S, S, 3) uint8), in one call with other requests' faces;
        blocks the calling thread until its rows are back."""
        call = _Call(model, np.asarray(crops), dict(options))
        self._batcher._submit(call, self)
        return call.result.result()

    def model(self, api) -> "BatchedModel":
        """``api`` with its ``apply`` going through this ticket (everything else is ``api``'s own)."""
        return BatchedModel(api, self)


class BatchedModel:
    """A ModelAPI stand-in for ``conceal.photos``: ``apply`` is batched, every other attribute is the model's."""

    def __init__(self, api, ticket: Ticket):
        self._api, self._ticket = api, ticket

    def __getattr__(self, name: str):
        return getattr(self._api, name)

    def apply(self, crops: np.ndarray, **options) -> np.ndarray:
        return self._ticket.release(self._api, crops, **options)


class ModelBatcher:
    def __init__(self, max_faces: int = 32, max_wait_s: float = 0.005):
        if max_faces < 1 or max_wait_s < 0:
            raise ValueError(f"max_faces must be 1 or more and max_wait_s 0 or more, not {max_faces} and {max_wait_s}")
        self.max_faces, self.max_wait_s = max_faces, max_wait_s
        self.calls = 0  # model calls made, and the faces they took (for tests and logs)
        self.faces = 0
        self._changed = threading.Condition()
        self._pending: list[_Call] = []
        self._expected = 0  # requests announced (``expect``) that have not handed their faces in yet
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextlib.contextmanager
    def request(self):
        """Around one request's work on its worker thread: yields a ``Ticket`` whose ``release`` runs the model.
        Until the request hands its faces in (or leaves: no face, a bad photo), a gathering batch may wait for it."""
        ticket = Ticket(self)
        with self._changed:
            self._expected += 1
        try:
            yield ticket
        finally:
            ticket._arrived()

    def _submit(self, call: _Call, ticket: Ticket) -> None:
        with self._changed:
            if self._closed:
                raise RuntimeError("the model batcher is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="conceal-model-batcher", daemon=True)
                self._thread.start()
            self._pending.append(call)
            if ticket._expected:  # in the same breath: the batch must not wait for a request that is already here
                ticket._expected = False
                self._expected -= 1
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._closed = False  # an app can start again after shutdown (a new thread on first use)

    def _gather(self) -> list[_Call] | None:
        """The next batch: wait for a first call, then for the announced requests, up to ``max_wait_s`` / ``max_faces``."""
        with self._changed:
            while not self._pending and not self._closed:
                self._changed.wait()
            if self._closed and not self._pending:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while (self._expected > 0 and sum(len(c.crops) for c in self._pending) < self.max_faces
                   and (left := deadline - time.monotonic()) > 0 and not self._closed):
                self._changed.wait(left)
            batch, faces = [], 0
            while self._pending and (not batch or faces + len(self._pending[0].crops) <= self.max_faces):
                faces += len(self._pending[0].crops)
                batch.append(self._pending.pop(0))
            return batch

    def _loop(self) -> None:
        while (batch := self._gather()) is not None:
            groups: dict[tuple, list[_Call]] = {}
            for call in batch:
                groups.setdefault(call.key, []).append(call)
            for calls in groups.values():
                try:
                    released = calls[0].model.apply(np.concatenate([c.crops for c in calls]), **calls[0].options)
                except BaseException as error:  # the requests' threads raise it (a 500 each), the batcher goes on
                    for c in calls:
                        c.result.set_exception(error)
                    continue
                self.calls += 1
                self.faces += len(released)
                start = 0
                for c in calls:
                    c.result.set_result(released[start : start + len(c.crops)])
                    start += len(c.crops)
