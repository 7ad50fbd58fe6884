"""Share-then-reveal (BAFO's conclusion): encode the faces of photos to concealed codes, share the codes,
and let whoever holds them render faces with any attributes, their own (``--labels``), and paste them back
into the photos they came from (``--into``).

``codes.npz`` (``encode_photos``), one row per face:
- ``codes`` (N, d) float32; ``paths`` (N,) str: the photo, as given on the command line and never
  absolute (an absolute input keeps only its own folder name);
- ``boxes`` (N, 4) and ``landmarks`` (N, 5, 2) float32 in the photo's upright pixels (``--no-detect``: the
  centre crop's box, landmarks NaN); ``scores`` (N,); ``sizes`` (N, 2) the photo's (height, width).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from .data.base import DataError
from .data.images import center_crop_resize, iter_image_files, read_image
from .photos import DEFAULT_MIN_FACE


def stored_path(file: Path, inputs: list[Path]) -> str:
    """The name codes.npz keeps for ``file``: as the user spelled it, never absolute (an absolute path
    tells whose machine and home folder the faces came from): an absolute input keeps only its own name."""
    for given in inputs:
        if given.is_absolute() and (file == given or given in file.parents):
            return (Path(given.name) / file.relative_to(given)).as_posix() if file != given else given.name
    return file.as_posix()


def encode_photos(model, inputs: list[Path], detect: bool = True, min_face: float = DEFAULT_MIN_FACE,
                  max_faces: int | None = None, crop: float | None = None) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """Every face of every photo among ``inputs`` -> (the codes.npz arrays, skipped path -> reason, photos
    with no face found)."""
    from concurrent.futures import ThreadPoolExecutor

    from .apply import THREADS, _decoded_chunks
    from .faces.align import align_face, geometry_of, training_data
    from .photos import centre_face, find_faces

    files, skipped = iter_image_files(inputs)
    geometry = geometry_of(model)
    crop = crop if crop is not None else training_data(model)[1]
    rows: dict[str, list] = {k: [] for k in ("codes", "paths", "boxes", "landmarks", "scores", "sizes")}
    no_face = []
    with ThreadPoolExecutor(min(THREADS, os.cpu_count() or 1)) as pool:
        for chunk in _decoded_chunks(files, pool, 64 if not detect else 4):
            crops, faces_of = [], []
            for f, image in chunk:
                if isinstance(image, str):
                    skipped[str(f)] = image
                    continue
                if detect:
                    faces = find_faces(image, min_face, max_faces)
                    crops += [align_face(image, face["landmarks"], geometry)[0] for face in faces]
                else:
                    faces = [centre_face(*image.shape[:2], crop)]
                    crops.append(center_crop_resize(image, geometry.size, crop))
                if not faces:
                    no_face.append(str(f))
                faces_of += [(f, image.shape[:2], face) for face in faces]
            if not crops:
                continue
            rows["codes"].append(model.encode(np.stack(crops)))
            for f, (h, w), face in faces_of:
                rows["paths"].append(stored_path(f, inputs))
                rows["boxes"].append(face["box"])
                rows["landmarks"].append(face["landmarks"] or np.full((5, 2), np.nan))
                rows["scores"].append(face["score"])
                rows["sizes"].append((h, w))
    if not rows["codes"]:
        return {}, skipped, no_face
    arrays = {"codes": np.concatenate(rows["codes"]).astype(np.float32), "paths": np.array(rows["paths"]),
              "boxes": np.array(rows["boxes"], np.float32).reshape(-1, 4),
              "landmarks": np.array(rows["landmarks"], np.float32).reshape(-1, 5, 2),
              "scores": np.array(rows["scores"], np.float32), "sizes": np.array(rows["sizes"], np.int64).reshape(-1, 2)}
    return arrays, skipped, no_face


def read_codes(path: Path, latent: int) -> dict[str, np.ndarray]:
    """codes.npz -> its arrays, checked (one-line errors); files from before faces were stored have none."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{path} is not a codes file written by conceal encode ({type(error).__name__})") from None
    codes = arrays.get("codes")
    if codes is None or codes.ndim != 2 or "paths" not in arrays or len(arrays["paths"]) != len(codes):
        raise DataError(f"{path} is not a codes file written by conceal encode (expected codes N x d and paths N)")
    if codes.shape[1] != latent:
        raise DataError(f"{path} holds codes of size {codes.shape[1]}, but this model's are of size {latent}")
    if not np.isfinite(codes).all():
        raise DataError(f"{path} holds non-finite codes")
    return arrays


def read_labels(path: Path) -> dict[str, dict[str, str]]:
    """labels.csv (a ``path`` column and one column per attribute) -> path -> {attribute: value}."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise DataError(f"{path} needs a header with a 'path' column and attribute columns (e.g. path,gender,age)")
            return {row["path"]: {k: v for k, v in row.items() if k != "path" and k is not None and v not in (None, "")}
                    for row in reader}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    except csv.Error as error:
        raise DataError(f"{path}: malformed CSV ({error})") from None


def match_photos(stored: list[str], folder: list[Path]) -> dict[str, Path]:
    """Stored paths -> files under ``folder`` (the --into photos), by the longest common tail of path
    components: ``photos/a/1.jpg`` finds ``a/1.jpg`` under ``--into photos`` or ``--into /mnt/copy/photos``."""
    files, _ = iter_image_files(folder)
    by_tail: dict[tuple[str, ...], Path | None] = {}
    for f in files:
        parts = Path(os.path.abspath(f)).parts
        for k in range(1, len(parts)):
            tail = parts[-k:]
            by_tail[tail] = None if tail in by_tail and by_tail[tail] != f else f  # None: two files share it
    out = {}
    for p in dict.fromkeys(stored):
        parts = Path(p).parts
        for k in range(len(parts), 0, -1):
            match = by_tail.get(tuple(parts[-k:]))
            if match is not None:
                out[p] = match
                break
    return out


def decode_rows(model, codes: np.ndarray, attributes: list[dict[str, Any]]) -> np.ndarray:
    """Render each code with its own attributes (rows with equal attributes in one call): (N, S, S, 3) uint8."""
    s = model.image_size
    out = np.zeros((len(codes), s, s, 3), np.uint8)
    groups: dict[tuple, list[int]] = {}
    for i, attrs in enumerate(attributes):
        groups.setdefault(tuple(sorted(attrs.items())), []).append(i)
    for key, rows in groups.items():
        out[rows] = model.decode(codes[rows], dict(key))
    return out


def run_decode(model, codes_path: Path, out: Path, as_: dict[str, Any] | None = None, labels: Path | None = None,
               into: list[Path] | None = None, overwrite: bool = False) -> str:
    """``conceal decode``: render codes.npz (each row ``as_``, or its own labels.csv row with ``as_`` on top),
    as OUT/000001.png ... (row order), or ``into`` the photos they came from (OUT mirrors those folders, with
    a manifest.jsonl as apply writes). Returns the summary line."""
    from .apply import MANIFEST, PhotoResult, check_output_folder, manifest_line, output_names, plural
    from .data.images import write_image

    if not hasattr(model, "decode"):
        raise DataError(f"a {model.method.name} model does not render codes (only the concealer's decoder does)")
    model.check_options(as_=as_ or {})
    arrays = read_codes(codes_path, model.method.cfg.latent)
    codes, paths = arrays["codes"], [str(p) for p in arrays["paths"]]
    attributes = [dict(as_ or {}) for _ in paths]
    missing: list[str] = []
    if labels is not None:
        table = read_labels(labels)
        for i, p in enumerate(paths):
            if p in table:
                attributes[i] = {**table[p], **(as_ or {})}
            else:
                missing.append(p)
        for attrs in {tuple(sorted(a.items())) for a in attributes}:
            model.check_options(as_=dict(attrs))  # a bad value in the CSV: one line, before anything is written
    keep = [i for i, p in enumerate(paths) if p not in set(missing)]
    check_output_folder(out, into or [])
    notes = [f"{plural(len(set(missing)), 'photo')} not in {labels}: not rendered"] if missing else []
    if not into:
        names = {i: f"{i + 1:06d}.png" for i in keep}
        taken = [out / n for n in names.values() if (out / n).exists()]
        if taken and not overwrite:
            raise DataError(f"{plural(len(taken), 'output')} already exist (e.g. {taken[0]}): --overwrite to replace them")
        faces = decode_rows(model, codes[keep], [attributes[i] for i in keep])
        for i, face in zip(keep, faces):
            write_image(out / names[i], face, replace=overwrite)
        return "; ".join([f"rendered {plural(len(keep), 'face')} to {out} (000001.png is codes row 1)"] + notes)
    if "landmarks" not in arrays:
        raise DataError(f"{codes_path} holds no face boxes (written by an older conceal encode): --into needs them")
    photos = match_photos([paths[i] for i in keep], into)
    unmatched = sorted({paths[i] for i in keep} - set(photos))
    rows_of: dict[Path, list[int]] = {}
    for i in keep:
        if paths[i] in photos:
            rows_of.setdefault(photos[paths[i]], []).append(i)
    plan = output_names(into, list(rows_of), ("image",))
    taken = [out / plan[f]["image"] for f in rows_of if (out / plan[f]["image"]).exists()]
    if (taken or (out / MANIFEST).exists()) and not overwrite:
        raise DataError(f"{taken[0] if taken else out / MANIFEST} already exists: --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    written, wrong_size = 0, []
    with open(out / MANIFEST, "w", encoding="utf-8") as log:
        for photo, rows in rows_of.items():
            image = read_image(photo)
            if any(tuple(arrays["sizes"][i]) != image.shape[:2] for i in rows):
                wrong_size.append(str(photo))
                log.write(manifest_line(str(photo), None, PhotoResult("skipped", "not the photo the codes came from (its size differs)")) + "\n")
                continue
            result = paste_decoded(model, image, decode_rows(model, codes[rows], [attributes[i] for i in rows]),
                                   arrays["boxes"][rows], arrays["landmarks"][rows])
            faces = [{"box": [round(float(v), 1) for v in arrays["boxes"][i]], "score": round(float(arrays["scores"][i]), 4),
                      "landmarks": [] if np.isnan(arrays["landmarks"][i]).any() else arrays["landmarks"][i].round(1).tolist()}
                     for i in rows]
            write_image(out / plan[photo]["image"], result, protect=[photo], replace=overwrite)
            log.write(manifest_line(str(photo), plan[photo]["image"], PhotoResult("ok", None, faces)) + "\n")
            written += 1
    if unmatched:
        notes.append(f"{plural(len(unmatched), 'photo')} of the codes not found under {', '.join(map(str, into))} (e.g. {unmatched[0]})")
    if wrong_size:
        notes.append(f"{plural(len(wrong_size), 'photo')} skipped: not the size it was encoded at (e.g. {wrong_size[0]})")
    return "; ".join([f"pasted {plural(sum(len(r) for f, r in rows_of.items() if str(f) not in wrong_size), 'face')} into "
                      f"{plural(written, 'photo')} in {out}"] + notes)


def paste_decoded(model, image: np.ndarray, faces: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Decoded faces (k, S, S, 3) back into the photo they were encoded from, where encode took them."""
    from .faces.align import centre_crop_matrix, geometry_of, similarity, warp
    from .faces.paste import face_mask, inside_photo, match_colour, paste_faces
    from .photos import colour_matched

    geometry = geometry_of(model)
    h, w = image.shape[:2]
    matrices, masks, faces = [], [], list(faces)
    for i, (box, marks) in enumerate(zip(boxes, landmarks)):
        if np.isnan(marks).any():  # --no-detect: the centre crop
            matrices.append(centre_crop_matrix(h, w, float(box[2] - box[0]) / min(h, w), geometry.size))
            masks.append(np.ones((geometry.size, geometry.size), np.float32))
        else:
            matrices.append(similarity(marks, geometry.template))
            masks.append(face_mask(geometry))
            if colour_matched(model):  # as `conceal apply` pastes (conceal.photos.replace_faces)
                crop = warp(image, matrices[-1], (geometry.size, geometry.size))
                faces[i] = match_colour(faces[i], crop, masks[-1], inside_photo(matrices[-1], geometry.size, h, w))
    return paste_faces(image, faces, matrices, masks)
