"""The ``public-model`` threat model: the attacker has what the user has (Kerckhoffs' principle).

It holds the released model (its weights are public) and a labelled face set of its own: it runs the
*train* split's faces through the model, trains many attackers on those releases with their labels, picks
hyper-parameters on the *validation* split's releases, and is scored on the releases of the *test* split,
faces it never saw (LFW: split by person, so never a person it saw either). The headline of a release kind
and attribute is its strongest attacker (best validation score; binary labels by AUC, see
``suite.selection_metric``) with a bootstrap 95% interval over the test faces. A learning curve retrains that attacker on 250 / 1k / 4k / all train faces: when the score
still rises at the largest size, the headline is a lower bound on what a larger face set would read.

Attackers per release:
- codes: the scikit-learn suite of ``suite.ATTACKERS``;
- images: a CNN trained from scratch (one network, a head per attribute), HOG + a grey thumbnail (PCA) with
  the linear attacker and the deep MLP, the
  off-the-shelf age/gender judge (no training), the face-embedding judge's 128-d embeddings + the suite,
  and (for a method that also releases codes) the public model's codes of the released images + the suite;
  then soft-voting ensembles of those inputs' strongest (``ensembles``);
- identity (data with identities): re-identification of released faces against one original per person.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..data.schema import Label, LabelSchema
from .attackers import AttackCNN, compute_threads, images_to_tensor
from .common import judge_name, sample_rows
from .context import AuditContext
from .report import best_on_test
from .suite import (DROPOUT_MLP, HOG_LINEAR, LIGHT, WIDE, attack_features, balanced_decision, chance_score, finish, primary_metric,
                    primary_score, score, selection_key, selection_metric)

THREAT_MODEL = "public-model"
ATTRIBUTES = ("gender", "race", "age")  # the sensitive attributes a headline is given for, where the data has them
CURVE_SIZES = (250, 1000, 4000)  # plus "all"
RISING = {"balanced_accuracy": 0.01, "auc": 0.01, "mae": 0.1}  # gain from the previous size that counts as still rising
CNN_SIZE = 32
HOG_THUMBNAIL = 16  # the grey thumbnail beside HOG: 16 x 16 = 256 values
HOG_ATTACKERS = (HOG_LINEAR, "mlp-512-256", DROPOUT_MLP)  # on the PCA of HOG + thumbnail (already WIDE-d: no second PCA)
CNN_EPOCHS = 4  # over ~16k UTKFace train faces: 1,000 updates; more epochs cost minutes a model on a shared 2-core machine
CNN_MIN_STEPS = 600
CNN_MAX_EPOCHS = 40
# The face-embedding judge (dlib) is the slowest step (~85 ms an image on an idle core; 0.57 s wall on the shared
# 2-core machine at load ~5, 2,177 s for 3,800 released UTKFace images), so its attackers see a seeded sample of each
# split; the section records the sizes ("samples"). Reports made before 2026-12-02 13:00 used 600 / 200 / 500.
EMBED_TRAIN, EMBED_VAL, EMBED_TEST = 2000, 300, 1500
BOOTSTRAP_RESAMPLES = 1000
JUDGE_VAL = 500  # validation faces the off-the-shelf judge reads (~15 ms each)
DESCRIPTION = ("attackers trained on the releases of the whole train split with its labels, hyper-parameters and the "
               "strongest attacker chosen on the validation split only (binary labels by AUC), scored on the releases of the "
               "test split; on released images, averages of the inputs' strongest attackers compete too")


# --------------------------------------------------------------------------------------------------
# Image features and image attackers
# --------------------------------------------------------------------------------------------------


def hog_features(images: np.ndarray, thumbnail: int = 0) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, F) HOG descriptors of the luminance (9 orientations, H/8-px cells, 2x2 blocks),
    followed, when ``thumbnail`` > 0, by the luminance itself at ``thumbnail`` x ``thumbnail`` (area-averaged, 0..1):
    HOG keeps edges and drops brightness, which a masker's soft mask values and a face's tone carry."""
    from skimage.color import rgb2gray
    from skimage.feature import hog
    from skimage.transform import resize

    cell = max(4, images.shape[1] // 8)
    out = []
    for image in images:
        grey = rgb2gray(image)
        parts = [hog(grey, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2))]
        if thumbnail:
            parts.append(resize(grey, (thumbnail, thumbnail), anti_aliasing=True).ravel())
        out.append(np.concatenate(parts))
    return np.asarray(out, np.float32) if out else np.zeros((0, 1), np.float32)


def pca_features(raw: dict[str, np.ndarray], seed: int, dim: int = WIDE) -> dict[str, np.ndarray]:
    """split -> (N, F) features standardised and projected on ``dim`` principal components, both fitted on the
    train split only (the attacker's own faces)."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(raw["train"])
    dim = min(dim, *raw["train"].shape)
    pca = PCA(n_components=dim, random_state=seed).fit(scaler.transform(raw["train"]))
    return {s: pca.transform(scaler.transform(x)).astype(np.float32) if len(x) else np.zeros((0, dim), np.float32) for s, x in raw.items()}


def _cnn_targets(labels: list[Label], y: dict[str, np.ndarray], stats: dict) -> torch.Tensor:
    """(N, len(labels)) float targets, continuous ones standardised, NaN kept (masked in the loss)."""
    columns = []
    for label in labels:
        v = np.asarray(y[label.name], np.float64)
        if label.kind == "continuous":
            v = (v - stats[label.name][0]) / stats[label.name][1]
        columns.append(v.astype(np.float32))
    return torch.from_numpy(np.stack(columns, axis=1))


def _heads(labels: list[Label]) -> list[slice]:
    out, start = [], 0
    for label in labels:
        width = 1 if label.kind == "continuous" else label.n_classes
        out.append(slice(start, start + width))
        start += width
    return out


def _cnn_loss(outputs: torch.Tensor, targets: torch.Tensor, labels: list[Label], heads: list[slice]) -> torch.Tensor:
    total = outputs.new_zeros(())
    for k, (label, head) in enumerate(zip(labels, heads)):
        known = ~torch.isnan(targets[:, k])
        if not known.any():
            continue
        if label.kind == "continuous":
            total = total + F.mse_loss(outputs[known, head][:, 0], targets[known, k])
        else:
            total = total + F.cross_entropy(outputs[known, head], targets[known, k].long())
    return total


def train_cnn(images: dict[str, np.ndarray], y: dict[str, dict[str, np.ndarray]], labels: list[Label], seed: int,
              epochs: int = CNN_EPOCHS, min_steps: int = CNN_MIN_STEPS, batch_size: int = 64) -> dict[str, dict[str, np.ndarray]]:
    """One CNN from scratch, a head per label, trained on the train split's released images; the epoch with the
    lowest validation loss is kept. ``images``/``y``: split -> images / {label: (N,)}. Returns split ("val",
    "test") -> {label: predictions ((N,) or (N, K) probabilities)}."""
    x = {split: images_to_tensor(images[split], CNN_SIZE) for split in ("train", "val", "test")}
    stats = {}
    for label in labels:
        if label.kind == "continuous":
            v = np.asarray(y["train"][label.name], np.float64)
            v = v[~np.isnan(v)]
            stats[label.name] = (float(v.mean()), float(v.std()) or 1.0) if len(v) else (0.0, 1.0)
    targets = {split: _cnn_targets(labels, y[split], stats) for split in x}
    heads = _heads(labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = AttackCNN(heads[-1].stop)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
        n = len(x["train"])
        batches = max(1, n // batch_size)
        best_loss, best_state = float("inf"), None
        for _ in range(max(epochs, min(-(-min_steps // batches), CNN_MAX_EPOCHS))):
            model.train()
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                xb = x["train"][idx]
                flip = torch.rand(len(idx), generator=generator) < 0.5  # mirrored faces carry the same labels
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
                loss = _cnn_loss(model(xb), targets["train"][idx], labels, heads)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                val_loss = float(_cnn_loss(_forward(model, x["val"]), targets["val"], labels, heads))
            if val_loss < best_loss:
                best_loss, best_state = val_loss, {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
        model.eval()
    out = {}
    with torch.no_grad():
        for split in ("val", "test"):
            outputs = _forward(model, x[split])
            out[split] = {}
            for label, head in zip(labels, heads):
                o = outputs[:, head]
                if label.kind == "continuous":
                    mean, std = stats[label.name]
                    out[split][label.name] = o[:, 0].numpy().astype(np.float64) * std + mean
                else:
                    out[split][label.name] = o.softmax(dim=1).numpy().astype(np.float64)
    return out


def _forward(model, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(x[i : i + 512]) for i in range(0, len(x), 512)]) if len(x) else model(x[:1])[:0]


def _scored(label: Label, y: dict[str, np.ndarray], predictions: dict[str, np.ndarray], y_train: np.ndarray, name: str,
            n_train: int, seconds: float, balanced: bool = True) -> dict:
    """A trained-elsewhere attacker's (CNN, judge) predictions -> the suite's result shape. ``balanced``: class
    probabilities decide by the train split's class frequencies (``suite.balanced_decision``), as every trained
    attacker of the suite does; the off-the-shelf judge, trained on no one's labels here, reads as it is."""
    metric, higher = primary_metric(label)
    known = {split: ~np.isnan(np.asarray(y[split], np.float64)) for split in ("val", "test")}
    y_test = np.asarray(y["test"], np.float64)[known["test"]]
    y_val = np.asarray(y["val"], np.float64)[known["val"]]
    train = np.asarray(y_train, np.float64)
    train = train[~np.isnan(train)]
    if min(len(y_test), len(y_val)) < 2 or not len(train):
        return {"skipped": "too few known rows"}
    if balanced and label.kind != "continuous":
        predictions = {split: (None if v is None else balanced_decision(v, train)) for split, v in predictions.items()}
    test_predictions = predictions["test"][known["test"]]
    val_predictions = None if predictions.get("val") is None else predictions["val"][known["val"]]
    entry = {"params": {}, "n_train": n_train, "test": score(y_test, test_predictions, label), "seconds": round(seconds, 1)}
    if val_predictions is not None:
        entry["val"] = score(y_val, val_predictions, label)
    result = {"metric": metric, "higher_is_more_leakage": higher, "chance": chance_score(label, train, y_test),
              "n_train": n_train, "n_val": int(known["val"].sum()), "n_test": len(y_test), "attackers": {name: entry}}
    return finish(result, {name: {"val": val_predictions, "test": test_predictions}}, {"val": y_val, "test": y_test},
                  {split: np.flatnonzero(known[split]) for split in ("val", "test")}, label)


def _judge_readings(judge, images: np.ndarray) -> dict[str, np.ndarray]:
    """The judge's readings without its face detector where it can skip it (only the readings are used here)."""
    import inspect

    if "find_faces" in inspect.signature(judge.predict).parameters:
        return judge.predict(images, find_faces=False)
    return judge.predict(images)  # a judge without the option (tests' stand-ins)


def _judge_predictions(judged: dict[str, np.ndarray], label: Label) -> np.ndarray | None:
    """The off-the-shelf age/gender judge's output (``predict``) as an attacker's: gender -> (N, 2) class scores,
    age -> (N,) years; None for a label it does not read."""
    if label.name == "age" and label.kind == "continuous":
        return judged["age"].astype(np.float64)
    if label.name == "gender" and label.kind == "binary":
        classes = [c.lower() for c in label.classes]
        if set(classes) == {"male", "female"}:
            p = judged["p_female"].astype(np.float64)
            return np.stack([p, 1 - p], axis=1) if classes.index("female") == 0 else np.stack([1 - p, p], axis=1)
    return None


# --------------------------------------------------------------------------------------------------
# Merging attacker results; bootstrap; learning curve
# --------------------------------------------------------------------------------------------------


def _in_split(result: dict, rows: dict[str, np.ndarray]) -> dict:
    """A result on sampled rows of each split -> its row index ("_index") in the whole split."""
    if "_index" in result:
        result["_index"] = {split: np.asarray(rows[split])[index] for split, index in result["_index"].items()}
    return result


def _as_probabilities(predicted: np.ndarray) -> np.ndarray:
    """(N, K) class scores -> rows that sum to one: probabilities as they are, margins (an estimator without
    predict_proba; -inf for classes it never saw) through a softmax, so that members of an ensemble weigh alike."""
    finite = np.isfinite(predicted)
    if finite.all() and (predicted >= 0).all() and np.allclose(predicted.sum(axis=1), 1.0, atol=1e-6):
        return predicted
    shifted = np.where(finite, predicted, -np.inf)
    shifted = np.exp(shifted - np.max(shifted, axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def ensembles(members: dict[str, dict], label: Label, chance: float) -> tuple[dict, dict]:
    """Soft-voting ensembles of the inputs' strongest attackers, ranked by validation score (``selection_metric``):
    the best two, the best three, ... each averaging, on every face of the split that any of them scored, the class
    probabilities (or age predictions) of the members that scored it. Why: attackers that read different features
    (pixels, HOG, face embeddings) each miss part of what the others read, and an average of them is a stronger
    attacker than any one: on masker-lfw-gender-nonadv's images the average of the CNN, face-embedding MLP and HOG
    dropout MLP reads 0.923 where they read 0.906, 0.866 and 0.914 alone. Members must beat chance on validation
    (an inverted judge only adds noise). Why the union of faces: a member that saw a sample of a split (face
    embeddings: 300 UTKFace validation faces) would otherwise move the ensemble onto that sample, where it competes
    on other faces than the full-split attackers (masker-utkface-agegroup's age: 10.39 on 300 validation faces,
    10.85 on its 1,500 test faces). ``members``: "input:attacker" -> result of ``suite.finish`` with that
    attacker's "val" scores and "n_train". Returns (attacker entries, their working arrays: name ->
    {"_test_predictions", "_y_test"})."""
    select, higher = selection_metric(label)
    floor = chance if select == "mae" else 0.5  # the mean guess's MAE; AUC and balanced accuracy of two classes: 0.5
    usable = {n: r for n, r in members.items() if r.get("_val_predictions") is not None and r.get("val")
              and np.isfinite(r["val"].get(select, np.nan)) and (r["val"][select] > floor if higher else r["val"][select] < floor)}
    ranked = sorted(usable, key=lambda n: selection_key(usable[n], select, higher), reverse=True)
    entries, arrays = {}, {}
    for k in range(2, len(ranked) + 1):
        chosen = ranked[:k]
        entry, working = {"params": {"members": chosen}, "n_train": max(usable[n]["n_train"] for n in chosen), "seconds": 0.0}, {}
        for split in ("val", "test"):
            rows = np.unique(np.concatenate([usable[n]["_index"][split] for n in chosen]))  # (N,) rows of the split
            total, count, y = None, np.zeros(len(rows)), None
            for n in chosen:
                r = usable[n]
                at = np.searchsorted(rows, r["_index"][split])
                predicted = r[f"_{split}_predictions"]
                predicted = predicted if label.kind == "continuous" else _as_probabilities(predicted)  # (n,) or (n, K)
                if total is None:
                    total, y = np.zeros((len(rows),) + predicted.shape[1:]), np.empty(len(rows), r[f"_y_{split}"].dtype)
                total[at] += predicted
                count[at] += 1
                y[at] = r[f"_y_{split}"]  # members agree on a face's label: the same row of the same split
            averaged = total / count.reshape((-1,) + (1,) * (total.ndim - 1))  # each face: the mean of its members
            entry[split] = score(y, averaged, label)
            working[split] = (averaged, y, rows)
        entries[f"ensemble:top-{k}"] = entry | {"n_test": int(len(working["test"][2]))}
        arrays[f"ensemble:top-{k}"] = {"_test_predictions": working["test"][0], "_y_test": working["test"][1]}
    return entries, arrays


def merge(inputs: dict[str, dict], label: Label) -> dict:
    """Results of several inputs (codes, hog, cnn, judge ...) for one label -> one result whose attackers are
    named "input:attacker", with ensembles of the inputs' strongest where there are two or more (``ensembles``);
    the strongest over all of them (validation score first, ``selection_metric``) is named again."""
    kept = {name: r for name, r in inputs.items() if "skipped" not in r}
    if not kept:
        return {"skipped": "; ".join(f"{k}: {r['skipped']}" for k, r in inputs.items()) or "nothing to attack"}
    first = next(iter(kept.values()))
    metric, higher = first["metric"], first["higher_is_more_leakage"]
    merged = {"metric": metric, "higher_is_more_leakage": higher, "chance": first["chance"], "attackers": {},
              "inputs": {name: {k: r[k] for k in ("n_train", "n_val", "n_test") if k in r} | ({"dim": r["dim"]} if "dim" in r else {})
                         for name, r in kept.items()},
              "skipped_inputs": {name: r["skipped"] for name, r in inputs.items() if "skipped" in r}}
    predictions, y_tests = {}, {}
    for name, r in kept.items():
        for attacker, entry in r["attackers"].items():
            merged["attackers"][f"{name}:{attacker}"] = entry | {"n_test": r["n_test"]}
        predictions[f"{name}:{r['strongest']}"] = r["_test_predictions"]
        y_tests[f"{name}:{r['strongest']}"] = r["_y_test"]
    if len(kept) > 1:
        members = {f"{name}:{r['strongest']}": r | {"val": r["attackers"][r["strongest"]].get("val"),
                                                    "n_train": r["attackers"][r["strongest"]]["n_train"]} for name, r in kept.items()}
        entries, arrays = ensembles(members, label, merged["chance"])
        merged["attackers"].update(entries)
        for name, working in arrays.items():
            predictions[name], y_tests[name] = working["_test_predictions"], working["_y_test"]

    select, select_higher = selection_metric(label)
    strongest = max(predictions, key=lambda full: selection_key(merged["attackers"][full], select, select_higher))  # each input's strongest competes
    merged["strongest"] = strongest
    merged["selected_by"] = select
    merged["n_train"] = merged["attackers"][strongest]["n_train"]
    merged["n_test"] = merged["attackers"][strongest]["n_test"]
    merged["_test_predictions"], merged["_y_test"] = predictions[strongest], y_tests[strongest]
    tests = {n: e["test"][metric] for n, e in merged["attackers"].items() if e["test"].get(metric) is not None and np.isfinite(e["test"][metric])}
    if tests:
        merged["max_on_test"] = {"attacker": (max if higher else min)(tests, key=tests.get), metric: (max if higher else min)(tests.values())}
    return merged


def bootstrap_interval(y: np.ndarray, predicted: np.ndarray, label: Label, seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> list[float]:
    """95% percentile-bootstrap interval (SciPy) of the label's primary metric over the test faces."""
    from scipy.stats import bootstrap

    if len(y) < 3:
        return [float("nan"), float("nan")]

    def statistic(rows, axis=-1):  # rows: (..., n) resampled test rows
        rows = rows.astype(int)
        return primary_score(y[rows], predicted[rows], label)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bootstrap((np.arange(len(y)),), statistic, n_resamples=resamples, method="percentile", vectorized=True,
                           batch=200, random_state=np.random.default_rng([seed, 13]))
    lo, hi = result.confidence_interval
    return [float(lo), float(hi)]


def learning_curve(X: dict[str, np.ndarray], y: dict[str, np.ndarray], label: Label, attacker: str, seed: int,
                   full: dict, sizes=CURVE_SIZES) -> dict:
    """The named suite attacker retrained on seeded subsets of the train rows; the full size is ``full``'s score."""
    metric, higher = primary_metric(label)
    known = ~np.isnan(np.asarray(y["train"], np.float64))
    n = int(known.sum())
    points = []
    for size in sizes:
        if size >= n:
            continue
        rows = np.flatnonzero(known)[sample_rows(n, size, seed, purpose=31 + size)]
        r = attack_features({"train": X["train"][rows], "val": X["val"], "test": X["test"]},
                            {"train": y["train"][rows], "val": y["val"], "test": y["test"]}, label, seed, attackers=(attacker,))
        if "skipped" not in r:
            points.append({"n_train": size, metric: r["attackers"][attacker]["test"][metric]})
    points.append({"n_train": n, metric: full["attackers"][attacker]["test"][metric]})
    gain = (points[-1][metric] - points[-2][metric]) * (1 if higher else -1) if len(points) > 1 else 0.0
    rising = len(points) > 1 and gain > RISING[metric]
    return {"attacker": attacker, "metric": metric, "points": points, "still_rising": bool(rising),
            "note": ("still rising at the largest size: the headline is a lower bound on what a larger labelled face set reads"
                     if rising else "flat at the largest size (within %g)" % RISING[metric])}


# --------------------------------------------------------------------------------------------------
# Identity: re-identification with the face-embedding judge
# --------------------------------------------------------------------------------------------------


def reid_rows(identity: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(gallery: one seeded original per test person with >= 2 images, probes: every other image of those people)."""
    identity = np.asarray(identity, np.int64)
    rng = np.random.default_rng([seed, 7])
    people, counts = np.unique(identity[identity >= 0], return_counts=True)
    gallery = np.sort(np.array([rng.choice(np.flatnonzero(identity == p)) for p in people[counts >= 2]], np.int64))
    probes = np.flatnonzero(np.isin(identity, people[counts >= 2]) & (identity >= 0))
    return gallery, np.setdiff1d(probes, gallery)


def rank_hits(probes: np.ndarray, probe_identity: np.ndarray, gallery: np.ndarray, gallery_identity: np.ndarray, k: int) -> np.ndarray:
    """(P,) bool: is the probe's own person among its k nearest gallery embeddings (Euclidean, dlib's metric)?"""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(gallery))
    nearest = NearestNeighbors(n_neighbors=k).fit(gallery).kneighbors(probes, return_distance=False)  # (P, k)
    return (np.asarray(gallery_identity)[nearest] == np.asarray(probe_identity)[:, None]).any(axis=1)


def identity_section(ctx: AuditContext, max_probes: int | None = 600) -> dict:
    """Rank-1 / rank-5 re-identification of released test faces (probes) against one original per person."""
    test = ctx.split("test")
    if not np.any(test.identity >= 0):
        return {"skipped": "the test faces have no identities"}
    if "images" not in ctx.releases_kinds:
        return {"skipped": "the method releases no images"}
    objects, status = ctx.judges()
    if objects.get("face_embedding") is None:
        return {"skipped": f"face-embedding judge unavailable: {status.get('face_embedding')}"}
    gallery, probes = reid_rows(test.identity, ctx.seed)
    if not len(gallery):
        return {"skipped": "no test person has two images"}
    probes = probes[sample_rows(len(probes), max_probes, ctx.seed, purpose=8)]
    if not len(probes):
        return {"skipped": "no probes (max_probes=0, or no second image of a test person)"}
    start = time.perf_counter()
    gallery_vectors = ctx.embed("test", "original", gallery)
    result: dict[str, Any] = {"judge": judge_name(objects["face_embedding"]), "gallery_people": int(len(gallery)), "probes": int(len(probes)),
                              "chance_rank1": 1.0 / len(gallery), "chance_rank5": min(5, len(gallery)) / len(gallery),
                              "note": "gallery: one original image per test person with at least two; probes: the other images of "
                                      "those people, released (or original, for reference); nearest by Euclidean distance of "
                                      "dlib's embeddings"}
    for source in ("released", "original"):
        vectors = ctx.embed("test", source, probes)
        result[source] = {}
        for k in (1, 5):
            hits = rank_hits(vectors, test.identity[probes], gallery_vectors, test.identity[gallery], k)
            result[source][f"rank{k}"] = float(hits.mean())
            if source == "released" and k == 1:
                result["_hits"] = hits
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


# --------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------


def _task_name(ctx: AuditContext) -> str | None:
    """The label a task-keeping method (the masker) releases for, when the data has it as a label; else None."""
    task = getattr(getattr(ctx.api.method, "task_label", None), "name", None)
    return task if task is not None and task in ctx.split("test").schema else None


def _labels(ctx: AuditContext) -> list[Label]:
    """The sensitive attributes the data has, and the method's own task (e.g. FER+ emotion: kept), if it is another label."""
    schema: LabelSchema = ctx.split("test").schema
    task = _task_name(ctx)
    return [schema[name] for name in ATTRIBUTES if name in schema] + ([schema[task]] if task and task not in ATTRIBUTES else [])


def _role(ctx: AuditContext, name: str) -> str:
    concealed = getattr(ctx.api.method, "concealed", None)
    return "concealed" if concealed is not None and name in concealed else "kept"


def _ys(ctx: AuditContext, name: str, rows: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    out = {}
    for split in ("train", "val", "test"):
        v = np.asarray(ctx.split(split).labels[name], np.float64)
        out[split] = v if rows is None else v[rows[split]]
    return out


def _attack_codes(ctx, features: dict[str, np.ndarray], labels, attackers=None, log=None) -> dict[str, dict]:
    return {label.name: attack_features(features, _ys(ctx, label.name), label, ctx.seed, attackers=attackers, log=log or ctx.log)
            for label in labels}


def public_model(ctx: AuditContext, options: dict | None = None) -> dict:
    """Every release kind of the model attacked under the public-model threat model. Returns the section (with
    "_"-prefixed predictions the headline needs; ``report.to_plain`` never sees them: see ``strip_private``)."""
    options = options or {}
    step_log = ctx.log
    labels = _labels(ctx)
    timings: dict[str, float] = {}
    section: dict[str, Any] = {"threat_model": THREAT_MODEL, "description": DESCRIPTION, "timings": timings,
                               "splits": {s: len(ctx.split(s)) for s in ("train", "val", "test")},
                               "grouped_by": "person (identity)" if np.any(ctx.split("test").identity >= 0) else "face (file name)",
                               "roles": {label.name: _role(ctx, label.name) for label in labels}, "releases": {}}

    def timed(name: str, fn: Callable):
        step_log(f"[audit] public-model: {name}")
        start = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - start, 1)
        step_log(f"[audit]   {name} done in {timings[name]:.0f} s")
        return out

    with compute_threads(1):
        if "codes" in ctx.releases_kinds:
            codes = timed("encode", lambda: {s: ctx.released(s, "codes") for s in ("train", "val", "test")})
            by_label = timed("codes", lambda: _attack_codes(ctx, codes, labels))
            section["releases"]["codes"] = {"labels": {label.name: merge({"codes": by_label[label.name]}, label) for label in labels}}
            if options.get("learning_curve", True):
                section["releases"]["codes"]["learning_curve"] = timed("codes_curve", lambda: {
                    label.name: learning_curve(codes, _ys(ctx, label.name), label, by_label[label.name]["strongest"], ctx.seed, by_label[label.name])
                    for label in labels if "skipped" not in by_label[label.name]})
        if "images" in ctx.releases_kinds:
            section["releases"]["images"] = timed("images", lambda: _image_release(ctx, labels, options, timings))
        identity = timed("identity", lambda: identity_section(ctx, options.get("max_probes", 600)))
        section["identity"] = identity
    return section


def _image_release(ctx: AuditContext, labels: list[Label], options: dict, timings: dict) -> dict:
    splits = ("train", "val", "test")
    released = {s: ctx.released(s, "images") for s in splits}
    inputs: dict[str, dict[str, dict]] = {label.name: {} for label in labels}
    samples: dict[str, dict] = {}  # attackers that see a sample of a split (the face-embedding judge's): its sizes
    log = ctx.log

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        timings[f"images_{name}"] = round(time.perf_counter() - start, 1)
        log(f"[audit]   images/{name}: {timings[f'images_{name}']:.0f} s")
        return out

    if options.get("cnn", True):
        def cnn():
            start = time.perf_counter()
            y = {s: {label.name: ctx.split(s).labels[label.name] for label in labels} for s in splits}
            predictions = train_cnn(released, y, labels, ctx.seed, epochs=options.get("cnn_epochs", CNN_EPOCHS),
                                    min_steps=options.get("cnn_min_steps", CNN_MIN_STEPS))
            seconds = time.perf_counter() - start
            for label in labels:
                ys = _ys(ctx, label.name)
                n_train = int(np.sum(~np.isnan(ys["train"])))
                inputs[label.name]["cnn"] = _scored(label, ys, {s: predictions[s][label.name] for s in ("val", "test")}, ys["train"],
                                                    "from-scratch", n_train, seconds)
        timed("cnn", cnn)
    task = _task_name(ctx)
    if task is not None and options.get("cnn", True) and options.get("original_reference", True):
        def original_cnn():
            # The same CNN, trained and chosen the same way on the *original* images of the same faces: what the
            # task reads without the model, so a kept task's score has its reference from the same recipe.
            start = time.perf_counter()
            task_label = [label for label in labels if label.name == task]
            originals = {s: np.asarray(ctx.split(s).images) for s in splits}
            y = {s: {task: ctx.split(s).labels[task]} for s in splits}
            predictions = train_cnn(originals, y, task_label, ctx.seed, epochs=options.get("cnn_epochs", CNN_EPOCHS),
                                    min_steps=options.get("cnn_min_steps", CNN_MIN_STEPS))
            ys = _ys(ctx, task)
            references[task] = _scored(task_label[0], ys, {s: predictions[s][task] for s in ("val", "test")}, ys["train"],
                                       "from-scratch", int(np.sum(~np.isnan(ys["train"]))), time.perf_counter() - start)
        references: dict[str, dict] = {}
        timed("original_cnn", original_cnn)
    else:
        references = {}
    if options.get("hog", True):
        def hog():
            # HOG + a grey thumbnail, standardised and reduced to WIDE principal components fitted on the train
            # split, for a linear attacker and the deep MLP. HOG + linear alone missed non-linear readings: an
            # independent torch MLP on such features read masker-utkface-agegroup's age at MAE 10.15 where this
            # audit's headline (the CNN) had 11.59 (benchmarks/independent_attacker.md).
            raw = {s: hog_features(released[s], thumbnail=HOG_THUMBNAIL) for s in splits}
            features = pca_features(raw, ctx.seed)
            for label in labels:
                inputs[label.name]["hog+pixels"] = attack_features(features, _ys(ctx, label.name), label, ctx.seed,
                                                                   attackers=HOG_ATTACKERS, log=log)
        timed("hog", hog)
    if "codes" in ctx.releases_kinds and options.get("reencode", True):
        def reencode():
            features = {s: ctx.api.encode(released[s]) for s in splits}
            for label in labels:
                inputs[label.name]["re-encoded"] = attack_features(features, _ys(ctx, label.name), label, ctx.seed, attackers=LIGHT, log=log)
        timed("reencode", reencode)
    objects, status = ctx.judges()
    judge = objects.get("age_gender")
    if judge is not None and options.get("judge", True):
        def judged():
            start = time.perf_counter()
            # Once per split, for every label; the judge is not trained, so validation (choosing the strongest) needs a sample only.
            rows = {"train": np.arange(len(ctx.split("train"))), "val": sample_rows(len(ctx.split("val")), JUDGE_VAL, ctx.seed, purpose=50),
                    "test": np.arange(len(ctx.split("test")))}
            outputs = {s: _judge_readings(judge, np.asarray(released[s][rows[s]])) for s in ("val", "test")}
            for label in labels:
                ys = _ys(ctx, label.name, rows)
                predictions = {s: _judge_predictions(outputs[s], label) for s in ("val", "test")}
                if predictions["test"] is not None:
                    inputs[label.name]["judge"] = _in_split(_scored(label, ys, predictions, ys["train"], "age-gender", 0,
                                                                    time.perf_counter() - start, balanced=False), rows)
        timed("judge", judged)
    if objects.get("face_embedding") is not None and options.get("embedding", True):
        def embedding():
            caps = {"train": options.get("embed_train", EMBED_TRAIN), "val": options.get("embed_val", EMBED_VAL), "test": options.get("embed_test", EMBED_TEST)}
            rows = {s: sample_rows(len(ctx.split(s)), caps[s], ctx.seed, purpose=40 + i) for i, s in enumerate(splits)}
            samples["face-embedding"] = {s: int(len(rows[s])) for s in splits} | {"of": {s: len(ctx.split(s)) for s in splits}}
            features = {s: ctx.embed(s, "released", rows[s]) for s in splits}
            for label in labels:
                inputs[label.name]["face-embedding"] = _in_split(attack_features(features, _ys(ctx, label.name, rows), label, ctx.seed,
                                                                                 attackers=("logistic", "mlp-256", "svm-rbf", "knn"), log=log), rows)
        timed("embedding", embedding)
    merged = {label.name: merge(inputs[label.name], label) for label in labels}
    for name, reference in references.items():
        if "skipped" not in merged[name] and "skipped" not in reference:
            merged[name]["original"] = {"attacker": "cnn:from-scratch", **reference["attackers"]["from-scratch"],
                                        "note": "the same CNN on the original images (reference)",
                                        "_test_predictions": reference["_test_predictions"], "_y_test": reference["_y_test"]}
    return {"labels": merged, "judges": {name: reason for name, reason in status.items()}, "samples": samples}


# --------------------------------------------------------------------------------------------------
# The headline
# --------------------------------------------------------------------------------------------------


def headline(section: dict, schema: LabelSchema, seed: int) -> dict:
    """{release kind: {attribute: {metric, score, ci95, chance, attacker, threat_model, n_train, n_test}}}."""
    out: dict[str, dict] = {}
    for kind, release in section.get("releases", {}).items():
        out[kind] = {}
        for name, result in release.get("labels", {}).items():
            if "skipped" in result:
                continue
            label = schema[name]
            metric = result["metric"]
            strongest = result["strongest"]
            out[kind][name] = {
                "metric": metric,
                "score": result["attackers"][strongest]["test"][metric],
                "ci95": bootstrap_interval(result["_y_test"], result["_test_predictions"], label, seed),
                "chance": result["chance"],
                "attacker": strongest,
                "threat_model": THREAT_MODEL,
                "n_train": result["n_train"],
                "n_test": result["n_test"],
                "role": section.get("roles", {}).get(name),
            }
            members = result["attackers"][strongest].get("params", {}).get("members")
            if members:  # an ensemble (``ensembles``): which attackers it averages
                out[kind][name]["members"] = members
            best = best_on_test(result, metric)
            if best is not None:  # the selection's cost: a small validation split can pick a weaker attacker
                out[kind][name]["best_on_test"] = best
            reference = result.get("original")
            if reference is not None:  # a kept task: the same CNN on the originals
                out[kind][name]["original"] = reference["test"][metric]
                out[kind][name]["original_ci95"] = bootstrap_interval(reference["_y_test"], reference["_test_predictions"], label, seed)
            curve = release.get("learning_curve", {}).get(name)
            if curve is not None and result["strongest"] == f"codes:{curve['attacker']}":
                out[kind][name]["lower_bound"] = curve["still_rising"]
    identity = section.get("identity", {})
    if "skipped" not in identity and "released" in identity:
        hits = identity["_hits"].astype(np.float64)
        from .metrics import mean_interval

        interval = mean_interval(hits, seed)
        out.setdefault("images", {})["identity"] = {
            "metric": "rank1", "score": identity["released"]["rank1"], "ci95": [interval["lo"], interval["hi"]],
            "chance": identity["chance_rank1"], "attacker": "face-embedding judge, nearest original", "threat_model": THREAT_MODEL,
            "n_train": 0, "n_test": identity["probes"], "original": identity["original"]["rank1"], "role": "concealed",
        }
    return {kind: v for kind, v in out.items() if v}


def strip_private(obj: Any) -> Any:
    """Drop the "_"-prefixed working arrays (predictions) before a section is written."""
    if isinstance(obj, dict):
        return {k: strip_private(v) for k, v in obj.items() if not (isinstance(k, str) and k.startswith("_"))}
    if isinstance(obj, list):
        return [strip_private(v) for v in obj]
    return obj
