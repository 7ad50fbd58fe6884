"""Micro-batching: the aligned faces of concurrent requests go through the model in one call.

A model call on one 64 px face costs about three times as much per face as one on eight
(benchmarks/SERVICE.md), so each worker thread hands its faces to its request's ``Ticket`` instead of calling
the model itself. The first thread to arrive while no call is running leads: it waits for the requests
that are still on their way to the model (at most ``max_wait_s``, at most ``max_faces`` faces), runs each
(model, options) group in one call on its own thread, and hands every request its own rows back; the
others wait for their rows. No thread of its own, so a lone request runs the model inline, with no hand-off.

It waits only for requests known to be coming: a request announces itself (``request``) before it decodes
and detects, and stops being waited for when it hands its faces in or leaves (no face, a bad photo), so
a lone request, or the last of a burst, goes straight to the model. The rows a request gets back depend on
how many faces shared its call (CPU kernels block by batch size: at most 1 level in a few pixels), never on
the other faces' content.
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
    taken: bool = False  # in a batch that a leader runs

    @property
    def key(self) -> tuple:
        """Calls with equal keys can share one model call: the same model and the same ``apply`` options."""
        return id(self.model), tuple(sorted((k, repr(v)) for k, v in self.options.items()))


class ModelBatcher:
    def __init__(self, max_faces: int = 32, max_wait_s: float = 0.005):
        if max_faces < 1 or max_wait_s < 0:
            raise ValueError(f"max_faces must be 1 or more and max_wait_s 0 or more, not {max_faces} and {max_wait_s}")
        self.max_faces, self.max_wait_s = max_faces, max_wait_s
        self.calls = 0  # model calls made, and the faces they took (for tests and logs)
        self.faces = 0
        self._changed = threading.Condition()  # guards everything below
        self._pending: list[_Call] = []
        self._expected = 0  # requests announced that have not handed their faces in (or left) yet
        self._leading = False  # a thread is gathering or running a batch

    @contextlib.contextmanager
    def request(self):
        """Around one request's work on its worker thread: yields the ``Ticket`` its model calls go through."""
        ticket = Ticket(self)
        with self._changed:
            self._expected += 1
        try:
            yield ticket
        finally:
            with self._changed:
                ticket._arrive()

    def _release(self, call: _Call, ticket: "Ticket") -> np.ndarray:
        with self._changed:
            self._pending.append(call)
            ticket._arrive()
        while True:
            with self._changed:
                while not call.taken and self._leading:
                    self._changed.wait()
                if call.taken:
                    break
                batch = self._gather()  # nobody leads and this call waits: lead (the batch may not hold it: loop)
            try:
                self._run(batch)
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()  # calls left waiting (over max_faces) get a leader
        return call.result.result()

    def _gather(self) -> list[_Call]:
        """(Lock held.) Lead: wait for the announced requests (up to ``max_wait_s`` / ``max_faces``), take a batch."""
        self._leading = True
        deadline = time.monotonic() + self.max_wait_s
        while (self._expected > 0 and sum(len(c.crops) for c in self._pending) < self.max_faces
               and (left := deadline - time.monotonic()) > 0):
            self._changed.wait(left)
        batch, faces = [], 0
        while self._pending and (not batch or faces + len(self._pending[0].crops) <= self.max_faces):
            call = self._pending.pop(0)
            call.taken, faces = True, faces + len(call.crops)
            batch.append(call)
        self._changed.notify_all()  # the followers whose calls were taken stop waiting for a leader
        return batch

    def _run(self, batch: list[_Call]) -> None:
        groups: dict[tuple, list[_Call]] = {}
        for call in batch:
            groups.setdefault(call.key, []).append(call)
        for calls in groups.values():
            try:
                released = calls[0].model.apply(np.concatenate([c.crops for c in calls]), **calls[0].options)
            except BaseException as error:  # each request of the call raises it (a 500 each); the others go on
                for c in calls:
                    c.result.set_exception(error)
                continue
            self.calls += 1
            self.faces += len(released)
            start = 0
            for c in calls:
                c.result.set_result(released[start : start + len(c.crops)])
                start += len(c.crops)


class Ticket:
    """One request's way to the model (``ModelBatcher.request``)."""

    def __init__(self, batcher: ModelBatcher):
        self._batcher, self._expected = batcher, True

    def _arrive(self) -> None:
        """(Lock held.) The request reached the model or left: a gathering leader stops waiting for it."""
        if self._expected:
            self._expected = False
            self._batcher._expected -= 1
            self._batcher._changed.notify_all()

    def release(self, model, crops: np.ndarray, **options) -> np.ndarray:
        """``model.apply(crops, **options)`` (crops (N, S, S, 3) uint8), in one call with other requests' faces;
        blocks the calling thread until its rows are back."""
        return self._batcher._release(_Call(model, np.asarray(crops), dict(options)), self)

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
