"""Safe image I/O on Pillow: every bad file becomes one short ``ImageReadError``, every write is clean.

- ``read_image`` (a path) / ``decode_image`` (bytes in memory, e.g. an upload): anything Pillow can open ->
  (H, W, 3) uint8 RGB, upright (EXIF orientation applied).
  Transparent images are composited on white (dropping alpha would expose whatever colour hides under
  transparent pixels, often black); 16-bit images are scaled to 8 bits (Pillow's own conversion clips
  everything above 255 to white); CMYK is converted naively (no ICC colour management).
- ``write_image``: PNG or JPEG with no metadata, written atomically, never over one of the inputs;
  ``encode_image``: the same clean encoding to bytes in memory.
- ``iter_image_files``: files and folders from the command line -> image files, plus what was skipped.
- ``check_images``: the one check of the image arrays every API takes (uint8 RGB, (N, H, W, 3) or one (H, W, 3)).
"""

from __future__ import annotations

import errno
import io
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Suffixes treated as images when scanning folders (compared lower-case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

# Refuse images declaring more pixels than this before decoding them: a few-KB file can declare
# 20000x20000 pixels and take gigabytes to decode. Faces never need this many.
DEFAULT_MAX_PIXELS = 64_000_000

_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
_WHITE = (255, 255, 255, 255)


class ImageReadError(ValueError):
    """A file that cannot be used as an image; ``reason`` is one short line ("zero-byte file")."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ImageTooLargeError(ImageReadError):
    """An image declaring more pixels than allowed (a decompression bomb, or just too big)."""


class NotAnImageError(ImageReadError):
    """Bytes that no Pillow decoder recognises as an image."""


def is_image_name(path: str | Path) -> bool:
    """True when the file name has an image suffix (case-insensitive)."""
    return os.path.splitext(str(path))[1].lower() in IMAGE_SUFFIXES


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to an upright (H, W, 3) uint8 RGB array, or raise ``ImageReadError``.

    Images declaring more than ``max_pixels`` pixels are refused from the header, before decoding.
    Pillow's own bomb guard (``Image.MAX_IMAGE_PIXELS``) still applies on top of it: above that,
    Pillow may warn before we refuse; above twice that, it refuses itself and we report the same reason.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise ImageReadError("a folder, not an image")
        if path.stat().st_size == 0:
            raise ImageReadError("zero-byte file")
    except FileNotFoundError:
        raise ImageReadError("file not found") from None
    except OSError as error:
        raise ImageReadError(f"unreadable file ({error.strerror or type(error).__name__})") from None
    return _decode(path, max_pixels)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``read_image`` for bytes already in memory (an upload): nothing touches the disk."""
    if not data:
        raise ImageReadError("zero-byte file")
    return _decode(io.BytesIO(data), max_pixels)


def _decode(source, max_pixels: int) -> np.ndarray:
    """A path or a binary file object -> (H, W, 3) uint8 RGB, or ImageReadError (see ``read_image``)."""
    try:
        with Image.open(source) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLargeError(f"image too large ({width}×{height} > {max_pixels} pixels)")
            img.load()  # decodes now, so a truncated file fails here rather than later
            img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(f"image too large (over {Image.MAX_IMAGE_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise NotAnImageError("not an image") from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except (OSError, SyntaxError, EOFError):
        # Pillow's plugins report truncation and corrupt streams with these.
        raise ImageReadError("truncated or corrupt image") from None
    except Exception as error:  # noqa: BLE001 - decoders of untrusted files raise many kinds
        raise ImageReadError(f"corrupt image ({type(error).__name__})") from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (mode "I" is how some formats hold it): scale 0..65535 to 0..255.
        grey = np.asarray(img).astype(np.float32)  # (H, W)
        grey8 = np.rint(np.clip(grey, 0, 65535) / 257.0).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2)  # (H, W, 3)
    if img.mode == "F":
        # Float images have no agreed range; converting would be a guess.
        raise ImageReadError("unsupported image mode F (floating point)")
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        # Alpha channels, and palette/grey/RGB images with a transparent colour.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        img = Image.alpha_composite(background, rgba)
    try:
        return np.array(img.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    except ValueError:
        raise ImageReadError(f"unsupported image mode {img.mode}") from None


def center_crop_resize(img: np.ndarray, size: int, crop: float = 1.0) -> np.ndarray:
    """Keep the central square of side ``crop`` x the shorter side, resized to (size, size, 3) uint8."""
    if not 0.0 < crop <= 1.0:
        raise ValueError(f"crop must be in (0, 1], not {crop}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, not {size}")
    height, width = img.shape[:2]
    side = min(height, width) * crop
    # A fractional box keeps the crop exactly centred; Pillow resamples from it directly.
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    resized = Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    return np.array(resized, dtype=np.uint8)  # (size, size, 3)


def check_images(images, size: int | None = None, single: bool = False) -> np.ndarray:
    """``images`` as an array, checked: uint8 RGB, (N, H, W, 3), or one (H, W, 3) image when ``single``;
    H = W = ``size`` when given. Raises ValueError naming the expected and the given dtype and shape."""
    images = np.asarray(images)
    expected = ", ".join([*([] if single else ["N"]), *([str(size)] * 2 if size else ["H", "W"]), "3"])
    ok = images.dtype == np.uint8 and images.ndim == (3 if single else 4) and images.shape[-1] == 3
    if not ok or (size is not None and images.shape[-3:-1] != (size, size)):
        raise ValueError(f"{'image' if single else 'images'} must be uint8 of shape ({expected}), not {images.dtype} {images.shape}")
    return images


def encode_image(array: np.ndarray, image_format: str = "PNG", compress_level: int = 6, strategy: int | None = None) -> bytes:
    """An (H, W, 3) uint8 array as PNG or JPEG bytes made from the pixels alone: no EXIF, ICC profile or
    text chunks. The same array always gives the same bytes. ``compress_level``: PNG's zlib level (1 encodes
    LFW's 250x250 photos ~4x faster than Pillow's 6, for 10-20% more bytes); ``strategy``: zlib's (``zlib.Z_RLE``
    with level 1: as fast as level 1 and about as small as level 6 on those photos: what `conceal serve` sends)."""
    array = check_images(array, single=True)
    buffer = io.BytesIO()
    options = {"quality": 95} if image_format == "JPEG" else {"compress_level": compress_level}
    if strategy is not None and image_format == "PNG":
        options["compress_type"] = strategy  # Pillow hands it to zlib's deflateInit2 as the strategy
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def write_image(path: str | Path, array: np.ndarray, protect: Iterable[str | Path] = (), replace: bool = True) -> None:
    """Write an (H, W, 3) uint8 array as PNG or JPEG (by suffix), with no metadata, atomically.

    Refuses (``ValueError``) to overwrite a file that is one of ``protect`` (the inputs of a batch run),
    including through another name for the same file (a symlink or hard link). ``replace=False``: raise
    ``FileExistsError`` rather than replace a file that exists, even one created while this one was written.
    """
    path = Path(path)
    image_format = _WRITE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"cannot write {path.name}: use a .png, .jpg or .jpeg name")
    if path.exists():
        for protected in protect:
            if Path(protected).exists() and os.path.samefile(path, protected):
                raise ValueError(f"refusing to overwrite input {protected}")
        if not replace:
            raise FileExistsError(errno.EEXIST, "file exists", str(path))
    data = encode_image(array, image_format)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A short temp name in the same folder (a long input name plus a long suffix could pass NAME_MAX), so
    # the final rename or link is atomic; "xb" respects the umask (tempfile would create it 0600).
    temp = path.with_name(f".{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
        if replace:
            os.replace(temp, path)
        else:
            try:
                os.link(temp, path)  # fails if the name was taken meanwhile: never replaces
            except FileExistsError:
                raise
            except OSError:  # a filesystem without hard links
                if path.exists():
                    raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
                os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def iter_image_files(paths: Iterable[str | Path]) -> tuple[list[Path], dict[str, str]]:
    """Files and folders -> (image files, skipped path -> reason).

    Folders are searched recursively (without following symlinked folders), in sorted order; hidden
    files and folders (".name") are passed over silently. A file is listed once even if named twice.
    """
    files: list[Path] = []
    skipped: dict[str, str] = {}
    seen: set[Path] = set()

    def add(file: Path) -> None:
        if not is_image_name(file):
            skipped[str(file)] = f"not an image file (suffix {file.suffix or 'none'})"
        elif file.resolve() not in seen:
            seen.add(file.resolve())
            files.append(file)

    for given in map(Path, paths):
        if given.is_dir():
            for folder, subfolders, names in os.walk(given):
                subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
                for name in sorted(names):
                    if not name.startswith("."):
                        add(Path(folder, name))
        elif given.is_file():
            add(given)
        else:
            skipped[str(given)] = "not found"
    return files, skipped
