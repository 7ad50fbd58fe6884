"""The service's micro-batcher: concurrent requests' faces share one model call, each request gets its own rows back."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from conceal.service.batcher import ModelBatcher


class RecordingModel:
    """Releases 255 - crops (so every row is traceable) and records the size and options of each call."""

    image_size = 4

    def __init__(self, fail: bool = False):
        self.calls: list[tuple[int, dict]] = []
        self.fail = fail

    def apply(self, crops: np.ndarray, **options) -> np.ndarray:
        self.calls.append((len(crops), options))
        if self.fail:
            raise RuntimeError("model broke")
        return 255 - crops


def crops(value: int, n: int = 1) -> np.ndarray:
    return np.full((n, 4, 4, 3), value, np.uint8)


def run_requests(batcher: ModelBatcher, model, jobs: list[tuple[np.ndarray, dict]]) -> list:
    """Each job on its own thread; all announce themselves (``request``) before any hands its faces in."""
    announced = threading.Barrier(len(jobs))

    def one(job):
        faces, options = job
        with batcher.request() as ticket:
            announced.wait(30)
            return ticket.release(model, faces, **options)

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(one, job) for job in jobs]
        return [f.exception(60) or f.result() for f in futures]


def test_announced_requests_share_one_call_and_get_their_own_rows_back():
    model, batcher = RecordingModel(), ModelBatcher(max_faces=32, max_wait_s=60)  # the wait is never reached
    out = run_requests(batcher, model, [(crops(10), {}), (crops(20, 2), {}), (crops(30, 3), {})])
    assert model.calls == [(6, {})]  # one call for the 1 + 2 + 3 faces
    for released, value, n in zip(out, (10, 20, 30), (1, 2, 3)):
        assert released.shape == (n, 4, 4, 3) and (released == 255 - value).all()
    assert (batcher.calls, batcher.faces) == (1, 6)


def test_requests_with_different_options_do_not_share_a_call():
    model, batcher = RecordingModel(), ModelBatcher(max_faces=32, max_wait_s=60)
    female, male = {"as_": {"gender": "female"}}, {"as_": {"gender": "male"}}
    out = run_requests(batcher, model, [(crops(1), female), (crops(2), male), (crops(3), female)])
    assert sorted((n, o["as_"]["gender"]) for n, o in model.calls) == [(1, "male"), (2, "female")]
    assert [int(o[0, 0, 0, 0]) for o in out] == [254, 253, 252]


def test_a_call_never_takes_more_than_max_faces_unless_one_request_has_more():
    model, batcher = RecordingModel(), ModelBatcher(max_faces=3, max_wait_s=60)
    run_requests(batcher, model, [(crops(1, 2), {}), (crops(2, 2), {}), (crops(3, 5), {})])
    assert sum(n for n, _ in model.calls) == 9 and all(n <= 3 or n == 5 for n, _ in model.calls)


def test_a_lone_request_and_one_that_leaves_early_are_not_waited_for():
    model, batcher = RecordingModel(), ModelBatcher(max_faces=32, max_wait_s=120)
    started = time.monotonic()
    with batcher.request() as ticket:
        assert (ticket.release(model, crops(5)) == 250).all()
    left, go = threading.Event(), threading.Event()

    def leaves_without_faces():  # e.g. a photo with no face: announced, never hands anything in
        with batcher.request():
            go.set()
            left.wait(30)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(leaves_without_faces)
        go.wait(30)
        with batcher.request() as ticket:
            timer = threading.Timer(0.5, left.set)  # the other request leaves while this one's batch waits
            timer.start()
            assert (ticket.release(model, crops(6)) == 249).all()
    assert time.monotonic() - started < 60  # far below the 120 s the batch would wait for a request that never came


def test_a_model_error_reaches_each_request_of_the_call_and_the_batcher_goes_on():
    broken, batcher = RecordingModel(fail=True), ModelBatcher(max_faces=32, max_wait_s=60)
    out = run_requests(batcher, broken, [(crops(1), {}), (crops(2), {})])
    assert all(isinstance(e, RuntimeError) and str(e) == "model broke" for e in out)
    with batcher.request() as ticket:
        assert (ticket.release(RecordingModel(), crops(7)) == 248).all()


# --- through the app ---------------------------------------------------------------------------------------------


pytest.importorskip("fastapi", reason="conceal serve needs the serve extra: pip install 'conceal[serve]'")


def test_concurrent_requests_through_the_app_match_one_at_a_time(tiny_models):
    from fastapi.testclient import TestClient

    from conceal.service import Limits, create_app, load_models

    served = load_models([tiny_models["concealer"]])
    rng = np.random.default_rng(0)
    photos = []
    for _ in range(6):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
        photos.append(buffer.getvalue())

    def post(c, photo):
        response = c.post("/v1/apply", files={"image": ("p.png", photo, "image/png")}, data={"detect": "false", "as": "gender=female"})
        assert response.status_code == 200, response.text
        return np.asarray(Image.open(io.BytesIO(response.content))).astype(int)

    with TestClient(create_app(served, Limits(workers=1))) as c:
        alone = [post(c, p) for p in photos]
    app = create_app(served, Limits(workers=3, queue=6, batch_wait_ms=50))
    with TestClient(app) as c, ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda p: post(c, p), photos))
    batcher = app.state.batcher
    assert batcher.faces == 6 and 1 <= batcher.calls <= 6
    for a, b in zip(alone, together):  # batch size may move a few pixels by 1 level (CPU kernels), nothing more
        assert a.shape == b.shape and np.abs(a - b).max() <= 1
