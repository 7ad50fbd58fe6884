"""The audit's metrics: thin wrappers over scikit-learn, scikit-image and SciPy, never hand-written.

Conventions: labels are the stored floats of ``conceal.data.schema`` (class index for binary/categorical,
a number for continuous); callers drop NaN (unknown) rows before calling. A metric that cannot be defined
on the data it is given (an AUC with one class present) is NaN, never a guess.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

from ..data.schema import Label

NAN = float("nan")


def class_probabilities(scores: np.ndarray, classes_seen: np.ndarray, n_classes: int) -> np.ndarray:
    """A fitted classifier's ``predict_proba`` (N, len(classes_seen)) -> (N, n_classes).

    A class absent from the attacker's training half gets probability 0, so every attacker's output has
    one column per class of the schema whatever its training data held.
    """
    full = np.zeros((len(scores), n_classes), dtype=np.float64)
    full[:, np.asarray(classes_seen, dtype=int)] = scores
    return full


def classification_metrics(y_true: np.ndarray, y_score: np.ndarray, label: Label) -> dict[str, float]:
    """Accuracy, balanced accuracy and AUC of class probabilities ``y_score`` (N, K) against ``y_true`` (N,).

    AUC: binary -> ``roc_auc_score`` on the probability of class 1; categorical -> the macro average of
    one-vs-rest ``roc_auc_score`` over the classes present in ``y_true`` (scikit-learn's own multiclass
    AUC refuses a test half that lacks a class, which small audits meet).
    """
    y_true = np.asarray(y_true).astype(int)
    y_score = np.asarray(y_score, dtype=np.float64)
    y_pred = y_score.argmax(axis=1)
    present = np.unique(y_true)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": the value is still right
        warnings.simplefilter("ignore")
        balanced = float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else NAN
    if len(present) < 2:
        auc = NAN
    elif label.kind == "binary":
        auc = float(roc_auc_score(y_true, y_score[:, 1]))
    else:
        auc = float(np.mean([roc_auc_score(y_true == k, y_score[:, k]) for k in present]))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else NAN,
        "balanced_accuracy": balanced,
        "auc": auc,
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE and RMSE (in the label's unit, e.g. years)."""
    if not len(y_true):
        return {"mae": NAN, "rmse": NAN}
    return {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
    }


def unrelated_partners(identity: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Context pairs for similarity judges: each row's partner is the next row in a seeded cycle (never itself).

    identity (n,) int64, -1 = unknown. Returns (partner (n,) row positions, keep (n,) bool): pairs that share a
    known identity are dropped, so what is kept is a pair of two different people as far as the data knows.
    """
    order = np.random.default_rng([seed, 3]).permutation(len(identity))
    partner = np.empty_like(order)
    partner[order] = np.roll(order, -1)
    return partner, (identity < 0) | (identity != identity[partner])


def chance_balanced_accuracy(y: np.ndarray) -> float:
    """Balanced accuracy of any guess that ignores the input: 1 / (number of classes present in ``y``)."""
    k = len(np.unique(np.asarray(y)))
    return 1.0 / k if k else NAN


def psnr(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images (N, H, W, 3) -> (N,) (identical images: inf)."""
    from skimage.metrics import peak_signal_noise_ratio

    with np.errstate(divide="ignore"):
        return np.array([peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(reference, test)])


def ssim(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-image SSIM of uint8 images (N, H, W, 3) -> (N,) (colour: averaged over channels)."""
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(a, b, data_range=255, channel_axis=-1) for a, b in zip(reference, test)])


def sharpness(images: np.ndarray, batch: int = 256, pool: int = 1) -> np.ndarray:
    """Per-image variance of the Laplacian of the luma of uint8 images (N, H, W, 3) -> (N,) (the focus measure
    the concealer's training logs too: ``methods.blocks.laplacian_variance``, here on 0..1 pixel values).
    ``pool=2``: after a 2x2 average pool, so a period-2 checkerboard does not count as sharpness."""
    import torch

    from ..methods.blocks import laplacian_variance, to_tensor_images

    with torch.no_grad():
        parts = [laplacian_variance(to_tensor_images(images[i : i + batch]), pool).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def sharpness_ratio(reference: np.ndarray, test: np.ndarray, pool: int = 1) -> float:
    """Mean sharpness of ``test`` over that of ``reference`` (1 = as sharp as the inputs; blur gives far less).
    ``pool=2``: both after a 2x2 average pool (``sharpness``), the ratio a checkerboard cannot inflate."""
    return float(sharpness(test, pool=pool).mean() / max(sharpness(reference, pool=pool).mean(), 1e-12))


def faces_found(images: np.ndarray, detector=None, min_face: float = 24) -> np.ndarray:
    """(N, H, W, 3) uint8 face crops -> (N,) bool: does the independent face detector (CenterFace,
    ``conceal.faces``; not trained by us, nor on these faces) find a face of at least ``min_face`` px in each?
    Raises ``faces.DetectorUnavailable`` (one line) where its package is missing."""
    from ..faces.detect import default_detector

    detector = detector or default_detector()
    return np.array([bool(detector(image, min_face=min_face, max_faces=1)) for image in images], dtype=bool)


def spread(values) -> dict[str, float]:
    """Mean, standard deviation, min and max of repeated measurements (e.g. over attacker seeds)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return {"mean": NAN, "std": NAN, "min": NAN, "max": NAN, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def mean_interval(values, seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """Mean of ``values`` with a percentile-bootstrap confidence interval (SciPy), for judge-based numbers."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return {"mean": float(v.mean()) if len(v) else NAN, "lo": NAN, "hi": NAN, "n": int(len(v))}
    if np.all(v == v[0]):  # no spread to resample: the interval is the value itself
        return {"mean": float(v[0]), "lo": float(v[0]), "hi": float(v[0]), "n": int(len(v))}
    result = bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=1000, method="percentile",
                       random_state=np.random.default_rng(seed))
    lo, hi = result.confidence_interval
    return {"mean": float(v.mean()), "lo": float(lo), "hi": float(hi), "n": int(len(v))}


def quartiles(values) -> dict[str, float]:
    """Mean and quartiles of a distribution (e.g. the judge's p_female over renders)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return {"mean": NAN, "q25": NAN, "median": NAN, "q75": NAN, "n": 0}
    q25, median, q75 = np.percentile(v, [25, 50, 75])
    return {"mean": float(v.mean()), "q25": float(q25), "median": float(median), "q75": float(q75), "n": int(len(v))}
