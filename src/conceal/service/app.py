"""The HTTP API and the page: ``create_app(models)`` -> a FastAPI app (``conceal serve`` runs it on uvicorn).

Endpoints: GET /health, GET /v1/models, POST /v1/apply (multipart photo -> PNG), GET / (the page),
/openapi.json, /docs and /redoc (FastAPI's, with Swagger UI's and ReDoc's files served by the app itself:
fastapi-offline, so the docs work with no internet). Every error is a JSON body ``{"error": "one line"}``.

Privacy: an upload is parsed in memory (never spooled to a temporary file), decoded, concealed, encoded
as a fresh PNG (no EXIF, no ICC profile, no text chunks) and dropped with the response; logs carry the
model, the status, the photo's size and the face count, never image content or file names.
"""

from __future__ import annotations

import logging
import sys
import time
import zlib
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from .. import __version__
from ..config import ConfigError
from ..data.images import DEFAULT_MAX_PIXELS, ImageReadError, ImageTooLargeError, NotAnImageError, decode_image, encode_image
from ..data.schema import LabelError
from ..faces import DetectorUnavailable
from .batcher import ModelBatcher
from .catalog import ServedModel
from .gate import Busy, InferenceGate
from ..photos import conceal_photo

log = logging.getLogger("conceal.service")
MiB = 1024 * 1024
FACES_HEADER = "X-Faces-Found"
TRUE, FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 20 * MiB  # the whole request body; beyond it 413 before the rest is read
    max_pixels: int = DEFAULT_MAX_PIXELS  # width x height declared by the image header (decompression bombs: 413)
    # Photos concealed at once, each on its own thread; their faces share model calls (batcher.py). 4: on LFW
    # photos with detection, 0.95-1.18x `conceal apply`'s rate vs 0.64-0.67x with 1 (benchmarks/SERVICE.md);
    # each photo in flight holds its decoded pixels (at most max_pixels x 3 bytes).
    workers: int = 4
    queue: int = 4  # requests waiting for a worker; one more is refused with 503
    retry_after_s: int = 1
    batch_faces: int = 32  # at most this many faces (of concurrent requests) in one model call
    batch_wait_ms: float = 5.0  # a model call waits at most this long for the faces of requests still on their way

    def __post_init__(self) -> None:
        if self.workers < 1 or self.queue < 0 or self.max_upload_bytes < 1 or self.max_pixels < 1 or self.batch_faces < 1 or not self.batch_wait_ms >= 0:
            raise ConfigError(f"workers and the size limits must be 1 or more and queue 0 or more, not workers={self.workers}, "
                              f"queue={self.queue}, upload={self.max_upload_bytes} bytes, pixels={self.max_pixels}, "
                              f"batch of {self.batch_faces} faces, {self.batch_wait_ms} ms wait")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class _InMemoryParser(MultiPartParser):
    spool_max_size = sys.maxsize  # an uploaded file stays in memory: nothing is written to disk


# --- the OpenAPI description (what /docs shows and Schemathesis tests) -----------------------------------


class ErrorBody(BaseModel):
    error: str


class Health(BaseModel):
    status: str
    version: str


class Attribute(BaseModel):
    name: str
    kind: str  # binary | categorical | continuous
    classes: list[str] | None = None  # binary / categorical values, in index order
    range: list[float] | None = None  # continuous [lo, hi]
    unspecified: bool = True  # "unspecified" (or leaving it out) lets the model choose


class ModelInfo(BaseModel):
    name: str
    method: str
    image_size: int
    attributes: list[Attribute]  # empty: the model takes no `as`


def _errors(*codes: int) -> dict:
    return {code: {"model": ErrorBody} for code in codes}


def _apply_request_body(names: list[str]) -> dict:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary", "description": "the photo (JPEG, PNG, WebP, ...)"},
            "model": {"type": "string", "enum": names, "default": names[0], "description": "a name from /v1/models"},
            "as": {"type": "string", "example": "gender=female,age=40",
                   "description": "attributes to render, as `conceal apply --as` (others: unspecified); concealer models only"},
            "detect": {"type": "boolean", "default": True,
                       "description": "find the faces in the photo (false: the photo is one centred face)"},
        },
    }}}}}


# --- the app -------------------------------------------------------------------------------------------


def create_app(models: dict[str, ServedModel], limits: Limits = Limits()) -> FastAPI:
    """An app serving ``models`` (already loaded: see ``catalog.load_models``) under ``limits``."""
    if not models:
        raise ConfigError("no model to serve")
    names = list(models)
    gate = InferenceGate(limits.workers, limits.queue)
    batcher = ModelBatcher(limits.batch_faces, limits.batch_wait_ms / 1000)
    page = {name: (resources.files(__package__) / "page" / name).read_bytes() for name in ("index.html", "page.js", "page.css")}
    # validatorUrl None: Swagger UI would otherwise send the spec to its online validator for a badge.
    app = FastAPIOffline(title="conceal", version=__version__, description="Conceal faces in photos: the `conceal serve` API.",
                         swagger_ui_parameters={"validatorUrl": None})
    app.state.gate, app.state.batcher, app.state.limits, app.state.models = gate, batcher, limits, models
    app.router.on_shutdown.append(gate.close)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError):
        return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError):
        # FastAPI's default body echoes the input back; one line naming the field is enough.
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)  # a traceback: no request content
        return JSONResponse({"error": f"internal error ({type(error).__name__})"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(page["index.html"])

    @app.get("/page.js", include_in_schema=False)
    async def script():
        return Response(page["page.js"], media_type="text/javascript")

    @app.get("/page.css", include_in_schema=False)
    async def style():
        return Response(page["page.css"], media_type="text/css")

    @app.get("/health", response_model=Health)
    async def health():
        return {"status": "ok", "version": __version__}

    @app.get("/v1/models", response_model=list[ModelInfo], response_model_exclude_none=True)
    async def list_models():
        return [m.describe() for m in models.values()]

    @app.post(
        "/v1/apply",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "the concealed photo: a PNG at the input's size, no metadata",
                  "headers": {FACES_HEADER: {"description": "faces found and concealed", "schema": {"type": "integer"}}}},
            **_errors(413, 415, 422),
            503: {"model": ErrorBody, "description": "busy: retry after Retry-After seconds",
                  "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
        },
        openapi_extra=_apply_request_body(names),
    )
    async def apply(request: Request):
        """Conceal the faces in one photo: multipart `image` (+ `model`, `as`, `detect`) -> image/png."""
        started = time.perf_counter()
        try:
            with gate.admit():  # before the body is read: bounded memory under any load
                form = await _read_form(request, limits.max_upload_bytes)
                model, options, detect, data = _parse_apply_form(form, models)
                png, faces, (height, width) = await gate.run(_conceal_upload, model, data, options, detect, limits.max_pixels, batcher)
        except Busy as busy:
            log.info("apply: 503 busy (%d admitted)", gate.admitted)
            raise ApiError(503, str(busy), {"Retry-After": str(limits.retry_after_s)}) from None
        except ApiError as error:
            log.info("apply: %d %s", error.status, error.message)
            raise
        log.info("apply: 200 model=%s %dx%d faces=%d %.0f ms", model.name, width, height, len(faces), 1000 * (time.perf_counter() - started))
        return Response(png, media_type="image/png", headers={FACES_HEADER: str(len(faces)), "Cache-Control": "no-store"})

    return app


async def _read_form(request: Request, max_bytes: int):
    """The multipart body, parsed in memory; 413 past ``max_bytes`` (from Content-Length, else while reading)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, f"send the photo as multipart/form-data (field 'image'), not {content_type.split(';')[0] or 'no content type'}")
    too_large = ApiError(413, f"upload larger than the server's limit of {max_bytes / MiB:g} MiB")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large

    async def capped():
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > max_bytes:
                raise too_large
            yield chunk

    try:
        return await _InMemoryParser(request.headers, capped(), max_files=1, max_fields=8, max_part_size=64 * 1024).parse()
    except MultiPartException as error:
        raise ApiError(422, f"malformed multipart body: {error.message}") from None


def _parse_apply_form(form, models: dict[str, ServedModel]) -> tuple[ServedModel, dict, bool, bytes]:
    upload = form.get("image")
    if not isinstance(upload, UploadFile):
        raise ApiError(422, "missing the photo: send it as the file field 'image'")
    name = form.get("model") or next(iter(models))
    if name not in models:
        raise ApiError(422, f"unknown model {name!r}; this server has: {', '.join(models)}")
    model = models[name]
    try:
        options = model.options(form.get("as") or None)
    except (LabelError, ConfigError) as error:
        raise ApiError(422, str(error)) from None
    detect_text = str(form.get("detect") or "true").strip().lower()
    if detect_text not in TRUE | FALSE:
        raise ApiError(422, f"detect must be true or false, not {detect_text!r}")
    upload.file.seek(0)
    return model, options, detect_text in TRUE, upload.file.read()  # from memory (see _InMemoryParser)


def _conceal_upload(model: ServedModel, data: bytes, options: dict, detect: bool, max_pixels: int, batcher: ModelBatcher):
    """On a worker thread: bytes -> (PNG bytes, faces, (H, W)); the photo's errors become 413 / 415 / 422.
    The model runs on this photo's faces together with those of concurrent requests (see batcher.py)."""
    with batcher.request() as ticket:
        try:
            image = decode_image(data, max_pixels)  # (H, W, 3) uint8, upright
        except ImageTooLargeError as error:
            raise ApiError(413, error.reason) from None
        except NotAnImageError as error:
            raise ApiError(415, f"{error.reason} (send a JPEG, PNG, WebP, ...)") from None
        except ImageReadError as error:
            raise ApiError(422, error.reason) from None
        try:
            released, faces = conceal_photo(ticket.model(model.api), image, as_=options.get("as_"), detect=detect)
        except DetectorUnavailable as error:  # the photos extra is missing on the server: its fix, in one line
            raise ApiError(503, str(error)) from None
    # zlib level 1 with run-length matching: ~4x faster than Pillow's default (level 6), about as small (benchmarks/SERVICE.md)
    return encode_image(released, compress_level=1, strategy=zlib.Z_RLE), faces, image.shape[:2]
