"""``conceal apply``'s library: photos in, concealed photos out, laid out like the inputs, with a manifest.

Two layers, so a batch engine (Ray Data ``map_batches``) can run the very same per-photo code and write the
very same bytes:

- ``conceal_images(model, images, options)`` -> one ``PhotoResult`` per (H, W, 3) uint8 image: status,
  faces and the arrays to write ({"image", "mask", "sheet"}); ``encode_png`` turns an array into the bytes
  the CLI writes (``images.encode_image``, metadata-free).
- ``run_apply(model, inputs, out, options, ...)``: the folder side. Outputs mirror the input tree under
  ``out`` (``a/1.jpg``, ``b/1.jpg`` -> ``OUT/a/1.png``, ``OUT/b/1.png``; ``names="index"``: ``000001.png``
  ...), every output name unique against the others (masks and sheets included); nothing that exists is
  replaced unless asked (``overwrite``); each file is written under a short temp name and linked into
  place; ``OUT/manifest.jsonl`` gets one line per input; ``resume`` skips the inputs it already lists.

A manifest line: ``{"input": path as given, "output": path under OUT or null, "status": "ok" | "no_face" |
"skipped", "reason": str or null, "faces": [{"box": [x0, y0, x1, y1], "score": float, "landmarks": [[x,
y] * 5]}]}``, boxes in the input's (upright) pixels.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data.base import DataError
from .data.images import (ImageReadError, center_crop_resize, encode_image, is_image_name, iter_image_files, read_image,
                          write_image)
from .photos import DEFAULT_MIN_FACE

MANIFEST = "manifest.jsonl"
STATUSES = ("ok", "no_face", "skipped")
NO_FACE = "no face found"
BATCH_NO_DETECT = 64  # face crops per model call with --no-detect
THREADS = 4  # decode / encode threads (at most the CPU count): Pillow releases the GIL while it works
SHEET_HEIGHT = 768  # px: before/after sheets are scaled to this height at most
# UTKFace's names are its labels: AGE_GENDER_RACE_DATE
LABEL_LIKE_NAME = re.compile(r"^\d{1,3}_\d_\d_")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class ApplyOptions:
    as_: dict[str, Any] | None = None  # the concealer's target attributes
    detect: bool = True  # False: every image is a face crop (today's centre-crop path, outputs at the model's size)
    min_face: float = DEFAULT_MIN_FACE
    max_faces: int | None = None
    on_no_face: str = "copy"  # copy | skip: what a photo with no face found becomes
    side_by_side: bool = False  # also a before/after sheet per photo
    colour_match: str = "auto"  # auto | on | off: drawn faces' mean colour matched to the photo's (photos.colour_matched)
    save_mask: bool = False  # masker: also the released mask (in the photo's frame when detecting)
    crop: float | None = None  # --no-detect: the centre crop (default: the model's training crop)
    upscale: bool = False  # --no-detect: output at the crop's size instead of the model's

    def kinds(self) -> tuple[str, ...]:
        """The files each input may produce, in naming order."""
        return ("image",) + (("mask",) if self.save_mask else ()) + (("sheet",) if self.side_by_side else ())


@dataclass
class PhotoResult:
    status: str  # ok | no_face | skipped
    reason: str | None = None
    faces: list[dict] = field(default_factory=list)
    images: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> (H, W, 3) uint8 to write


def check_options(model, options: ApplyOptions) -> None:
    """Refuse options the model cannot take before any file is read (one-line errors)."""
    from .config import ConfigError

    if options.on_no_face not in ("copy", "skip"):
        raise ConfigError(f"--on-no-face takes copy or skip, not {options.on_no_face!r}")
    if options.min_face < 0 or not np.isfinite(options.min_face):
        raise ConfigError(f"--min-face must be 0 or more pixels, not {options.min_face}")
    if options.max_faces is not None and options.max_faces < 1:
        raise ConfigError(f"--max-faces must be 1 or more, not {options.max_faces}")
    if options.detect and (options.crop is not None or options.upscale):
        raise ConfigError(f"{'--crop' if options.crop is not None else '--upscale'} is for --no-detect: detected faces are "
                          "aligned to the model's training crop and pasted back at the photo's size")
    if options.crop is not None and not 0 < options.crop <= 1:
        raise ConfigError(f"--crop must be in (0, 1], not {options.crop}")
    model.check_options(**({"as_": options.as_} if options.as_ is not None else {}))
    if options.save_mask and not hasattr(model, "masks"):
        raise ConfigError(f"--save-mask needs a model that releases a mask, not a {model.method.name} model")
    if options.detect:
        from .faces.detect import default_detector

        default_detector()  # a missing detector fails now, in one line


# --- the per-photo function ----------------------------------------------------------------------


def conceal_images(model, images: list[np.ndarray], options: ApplyOptions, detector=None) -> list[PhotoResult]:
    """Conceal a batch of upright (H, W, 3) uint8 photos. Pure: the same images and options give the same
    arrays (``encode_png``: the same bytes).

    Detecting, the model runs on each photo's faces alone, so any grouping of photos into batches gives
    the same bytes. With ``detect=False`` (face crops, today's dataset path) the batch's crops go through
    the model together, for speed: a batch engine gets the CLI's bytes by batching the same files in the
    same order (``BATCH_NO_DETECT`` per batch, sorted as ``iter_image_files`` lists them).
    """
    from .faces.align import training_data
    from .photos import centre_face, find_faces, release, replace_faces

    results = []
    if options.detect:
        for image in images:
            faces = find_faces(image, options.min_face, options.max_faces, detector)
            result = PhotoResult("ok" if faces else "no_face", None if faces else NO_FACE, faces)
            if faces:
                result.images["image"], mask = replace_faces(model, image, faces, options.as_, options.save_mask,
                                                                   options.colour_match)
                if mask is not None:
                    result.images["mask"] = mask
            elif options.on_no_face == "copy":
                result.images["image"] = image
            results.append(result)
    else:
        crop = options.crop if options.crop is not None else training_data(model)[1]
        crops = np.stack([center_crop_resize(image, model.image_size, crop) for image in images]) if images else None
        released = release(model, crops, options.as_) if images else []
        masks = model.masks(crops) if images and options.save_mask else [None] * len(images)
        for image, face, mask in zip(images, released, masks):
            result = PhotoResult("ok", None, [centre_face(*image.shape[:2], crop)])
            result.images["image"] = _upscaled(face, result.faces[0], options.upscale)
            if mask is not None:
                result.images["mask"] = _upscaled(np.repeat(mask[..., None], 3, axis=2), result.faces[0], options.upscale)
            results.append(result)
    if options.side_by_side:
        for image, result in zip(images, results):
            if "image" in result.images:
                result.images["sheet"] = before_after(image, result.images["image"])
    return results


def _upscaled(face: np.ndarray, box: dict, upscale: bool) -> np.ndarray:
    """--no-detect output: the model's crop, or with --upscale resized to the crop's side in the input."""
    if not upscale:
        return face
    from PIL import Image

    x0, _, x1, _ = box["box"]
    side = max(1, round(x1 - x0))
    return np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.BICUBIC))


def before_after(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The input and its output side by side (both scaled to one height, at most ``SHEET_HEIGHT``), 8 px apart."""
    from PIL import Image

    height = min(SHEET_HEIGHT, before.shape[0])
    panels = [np.asarray(Image.fromarray(a).resize((max(1, round(a.shape[1] * height / a.shape[0])), height),
                                                   Image.Resampling.BILINEAR, reducing_gap=2.0)) for a in (before, after)]
    gap = np.full((height, 8, 3), 255, np.uint8)
    return np.concatenate([panels[0], gap, panels[1]], axis=1)


def encode_png(array: np.ndarray) -> bytes:
    """The bytes ``run_apply`` writes for an output array: a metadata-free PNG."""
    return encode_image(array, "PNG")


def manifest_line(input_path: str, output: str | None, result: PhotoResult) -> str:
    """One manifest line (no newline), keys in the documented order."""
    record = {"input": input_path, "output": output, "status": result.status, "reason": result.reason, "faces": result.faces}
    return json.dumps(record, separators=(", ", ": "))


# --- the output folder -----------------------------------------------------------------------------


def output_names(inputs: list[Path], files: list[Path], kinds: tuple[str, ...], names: str = "keep") -> dict[Path, dict[str, str]]:
    """input file -> {kind: output path relative to OUT}, unique over every input and kind.

    ``keep``: the input's path relative to the common folder of the inputs (a folder given counts as its
    own root, a file as its parent), as .png; a mask adds ``_mask``, a sheet ``_before_after``. Names that
    would collide (``1.jpg`` and ``1.png``; ``face.jpg``'s mask and an input ``face_mask.jpg``) get ``-2``,
    ``-3`` ... in sorted order, so the layout does not depend on the order of the arguments.
    ``index``: ``000001.png`` ... in sorted order (the mapping only in the manifest).
    """
    suffix = {"image": "", "mask": "_mask", "sheet": "_before_after"}
    if names == "index":
        ordered = sorted(files, key=lambda f: os.path.abspath(f))
        width = max(6, len(str(len(files))))
        return {f: {k: f"{i:0{width}d}{suffix[k]}.png" for k in kinds} for i, f in enumerate(ordered, 1)}
    if names != "keep":
        raise ValueError(f"names must be keep or index, not {names!r}")
    roots = [os.path.abspath(p if Path(p).is_dir() else Path(p).parent) for p in inputs]
    base = os.path.commonpath(roots) if roots else os.getcwd()
    stems = {f: Path(os.path.relpath(os.path.abspath(f), base)).with_suffix("").as_posix() for f in files}
    ordered = sorted(files, key=lambda f: (stems[f], os.path.abspath(f)))
    used: set[str] = set()
    out: dict[Path, dict[str, str]] = {f: {} for f in files}
    for kind in kinds:  # every main image first, so inputs keep their plain names before masks/sheets take theirs
        for f in ordered:
            stem, n = stems[f], 1
            name = f"{stem}{suffix[kind]}.png"
            while name.lower() in used:  # case-insensitive: a.png and A.png are one file on macOS and Windows
                n += 1
                name = f"{stem}-{n}{suffix[kind]}.png"
            used.add(name.lower())
            out[f][kind] = name
    return out


def check_output_folder(out: Path, inputs: list[Path]) -> None:
    """Refuse an -o that names a file, or lies in (or is) an input folder, in one line."""
    if is_image_name(out):
        raise DataError(f"-o {out} looks like a file name: -o is the output folder (e.g. -o {out.with_suffix('')})")
    if out.exists() and not out.is_dir():
        raise DataError(f"-o {out} is a file: -o is the output folder")
    resolved = out.resolve()
    for given in inputs:
        if given.is_dir():
            folder = given.resolve()
            if resolved == folder or folder in resolved.parents:
                raise DataError(f"-o {out} is inside the input folder {given}: outputs would mix with the photos "
                                "(and be read as inputs next time); choose a folder outside it")


def read_manifest(path: Path) -> dict[str, dict]:
    """input -> record of a manifest; a line cut short by a crash (no newline at the end) is dropped."""
    if not path.is_file():
        return {}
    text = path.read_bytes()
    complete = text[: text.rfind(b"\n") + 1]
    if len(complete) != len(text):
        with open(path, "r+b") as handle:  # drop the torn tail so new lines start clean
            handle.truncate(len(complete))
    records = {}
    for number, line in enumerate(complete.decode("utf-8", "replace").splitlines(), 1):
        try:
            record = json.loads(line)
            records[record["input"]] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path} line {number} is not a manifest record: remove it or use --overwrite") from None
    return records


@dataclass
class ApplySummary:
    out: Path
    written: int = 0  # images written (the photo outputs, not masks and sheets)
    no_face: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    resumed: int = 0  # inputs already in the manifest

    def add(self, input_path: str, output: str | None, status: str, reason: str | None) -> None:
        """Count one input as its manifest line records it."""
        if status == "skipped":
            self.skipped[input_path] = reason or "skipped"
        else:
            self.written += output is not None
            if status == "no_face":
                self.no_face.append(input_path)

    def line(self, on_no_face: str) -> str:
        parts = [f"wrote {plural(self.written, 'image')} to {self.out}"]
        if self.resumed:
            parts.append(f"{self.resumed} already done (in {MANIFEST})")
        if self.no_face:
            shown = ", ".join(self.no_face[:5]) + (f" and {len(self.no_face) - 5} more" if len(self.no_face) > 5 else "")
            what = "copied unchanged" if on_no_face == "copy" else "not written"
            parts.append(f"{plural(len(self.no_face), 'photo')} with no face found, {what} (check them: {shown})")
        if self.skipped:
            parts.append(skip_counts(self.skipped))
        return "; ".join(parts)


@dataclass
class ApplyPlan:
    """What a run into ``out`` will do, decided (and refused, in one line) before any image is read: the
    same for ``run_apply`` and the Ray engine (``conceal.ray_apply``), so both write the same files."""

    out: Path
    files: list[Path]  # every image file among the inputs, in order
    names: dict[Path, dict[str, str]]  # file -> {kind: output path under out}
    todo: list[Path]  # the files a resumed run has not done yet (all of them otherwise)
    skipped: dict[str, str]  # not an image file -> reason
    done: dict[str, dict]  # the manifest's records (resume)
    resume: bool
    replace: bool  # an output may replace a file there (--overwrite, or --resume's own unlisted outputs)

    def open_manifest(self):
        """The manifest, opened for this run's lines, the non-image inputs' lines already in it."""
        log = open(self.out / MANIFEST, "a" if self.resume else "w", encoding="utf-8")
        for path, reason in self.skipped.items():
            if path not in self.done:
                log.write(manifest_line(path, None, PhotoResult("skipped", reason)) + "\n")
        return log

    def summary(self) -> ApplySummary:
        return ApplySummary(self.out, skipped=dict(self.skipped), resumed=len(self.files) - len(self.todo))


def plan_apply(model, inputs: list[Path], out: Path, options: ApplyOptions, names: str = "keep", overwrite: bool = False,
               resume: bool = False) -> ApplyPlan:
    """Check everything a run can check up front, warn about label-like names, create ``out``: see ``run_apply``."""
    check_options(model, options)
    out = Path(out)
    check_output_folder(out, inputs)
    files, skipped = iter_image_files(inputs)
    if not files:
        raise DataError("no image files among the inputs" + _reasons(skipped))
    manifest = out / MANIFEST
    done = read_manifest(manifest) if resume else {}
    if manifest.exists() and not (resume or overwrite):
        raise DataError(f"{out} holds a previous run ({MANIFEST}): --resume to continue it, --overwrite to replace its files")
    plan = output_names(inputs, files, options.kinds(), names)
    todo = [f for f in files if str(f) not in done]
    # Outputs of inputs not yet done: a file there is someone else's (a resumed run wrote its manifest line
    # after each file, so its own finished outputs belong to inputs it lists).
    existing = [out / n for f in todo for n in plan[f].values() if (out / n).exists()]
    if existing and not (overwrite or resume):
        raise DataError(f"{plural(len(existing), 'output')} already exist (e.g. {existing[0]}): --overwrite to replace them")
    inputs_there = {f.resolve() for f in files} & {p.resolve() for p in existing}
    if inputs_there:  # write_image refuses too; this says so before any work (a Ray worker only knows its chunk)
        raise DataError(f"refusing to overwrite input {sorted(inputs_there)[0]}: it is also an output name under -o {out}")
    if names == "keep":
        labelled = [f.name for f in files if LABEL_LIKE_NAME.match(f.name)]
        if labelled:
            print(f"conceal: warning: {plural(len(labelled), 'input name')} {'looks' if len(labelled) == 1 else 'look'} like labels (e.g. {labelled[0]}: UTKFace's "
                  "age_gender_race) and are kept in the output names: --names index drops them", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    return ApplyPlan(out, files, plan, todo, skipped, done, resume, overwrite or resume)


def run_apply(model, inputs: list[Path], out: Path, options: ApplyOptions, names: str = "keep", overwrite: bool = False,
              resume: bool = False, progress: bool = False, batch: int | None = None) -> ApplySummary:
    """Conceal every image among ``inputs`` (files and folders) into the folder ``out``; see the module doc."""
    plan = plan_apply(model, inputs, out, options, names, overwrite, resume)
    summary = plan.summary()
    from tqdm import tqdm

    with plan.open_manifest() as log, ThreadPoolExecutor(min(THREADS, os.cpu_count() or 1)) as pool, \
            tqdm(total=len(plan.todo), unit="img", disable=not progress) as bar:
        for f, output, result in conceal_files(model, plan.todo, plan.names, plan.out, options, pool,
                                               batch_size(options, batch), protect=plan.files, replace=plan.replace):
            log.write(manifest_line(str(f), output, result) + "\n")
            log.flush()
            summary.add(str(f), output, result.status, result.reason)
            bar.update()
    check_summary(summary)
    return summary


def batch_size(options: ApplyOptions, batch: int | None = None) -> int:
    """Photos per ``conceal_images`` call (with --no-detect the grouping is part of the bytes: see there)."""
    return batch or (BATCH_NO_DETECT if not options.detect else 4)


def check_summary(summary: ApplySummary) -> None:
    if not summary.written and not summary.resumed and not summary.no_face:
        raise DataError("no readable images among the inputs" + _reasons(summary.skipped))


def conceal_files(model, files: list[Path], names: dict[Path, dict[str, str]], out: Path, options: ApplyOptions,
                  pool: ThreadPoolExecutor, batch: int, protect: list[Path], replace: bool):
    """Decode, conceal (``batch`` photos per model call, in order) and write ``files``; yield (file, output
    name or None, PhotoResult) per file, in order, once its files are written (so a manifest line written
    after it never lists a missing file). Decoding runs ahead and writing behind on ``pool``."""
    writes: deque = deque()
    for chunk in _decoded_chunks(files, pool, batch):
        readable = [(f, img) for f, img in chunk if not isinstance(img, str)]
        results = dict(zip([f for f, _ in readable], conceal_images(model, [img for _, img in readable], options)))
        for f, img in chunk:
            result = results.get(f) or PhotoResult("skipped", img)
            outputs = {names[f][k]: a for k, a in result.images.items()}
            writes.append((f, names[f]["image"] if "image" in result.images else None, result,
                           pool.submit(_write_all, out, outputs, protect, replace)))
        while len(writes) > 2 * batch or (writes and writes[0][3].done()):
            yield _written(writes.popleft())
    while writes:
        yield _written(writes.popleft())


def _written(entry):
    f, output, result, written = entry
    written.result()  # (a failed write raises here)
    return f, output, result


def _decoded_chunks(files: list[Path], pool: ThreadPoolExecutor, batch: int):
    """Yield lists of (file, image or skip reason) of up to ``batch`` files, decoding ahead on ``pool``."""
    def decode(f: Path):
        try:
            return read_image(f)
        except ImageReadError as error:
            return error.reason

    queue: deque = deque(pool.submit(decode, f) for f in files[: 2 * batch])
    position = len(queue)
    chunk = []
    for f in files:
        chunk.append((f, queue.popleft().result()))
        if position < len(files):
            queue.append(pool.submit(decode, files[position]))
            position += 1
        if len(chunk) == batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_all(out: Path, outputs: dict[str, np.ndarray], protect: list[Path], replace: bool) -> None:
    for name, array in outputs.items():
        try:
            write_image(out / name, array, protect=protect, replace=replace)
        except FileExistsError:
            raise DataError(f"{out / name} appeared while this run wrote it (another run into {out}?): "
                            "--overwrite to replace it") from None


def skip_counts(skipped: dict[str, str]) -> str:
    """'3 skipped (2 not an image; 1 zero-byte file)'."""
    reasons: dict[str, int] = {}
    for r in skipped.values():
        reasons[r] = reasons.get(r, 0) + 1
    return f"{len(skipped)} skipped (" + "; ".join(f"{n} {r}" for r, n in reasons.items()) + ")"


def _reasons(skipped: dict[str, str]) -> str:
    return ", " + skip_counts(skipped) if skipped else ""
