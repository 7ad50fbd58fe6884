"""Post-hoc linear concept erasure of released codes (LEACE: Belrose et al., "LEACE: Perfect linear
concept erasure in closed form", NeurIPS 2023).

Training pressure (a critic, an MMD penalty) lowers what codes say about the concealed labels but leaves
some of it linearly readable. LEACE removes exactly the linearly available part in closed form, with
the least change to the codes: after ``erase``, no linear classifier fitted on the fitting data does
better than a constant on the label encodings. Fresh attackers on held-out data measure what is left
(non-linear information and fitting-set/test-set drift); the audit reports both.
"""

from __future__ import annotations

import numpy as np

from ..data.schema import LabelSchema


def label_targets(labels: dict[str, np.ndarray], schema: LabelSchema) -> tuple[np.ndarray, np.ndarray]:
    """Labels -> (N, k) float64 targets (binary 0/1, categorical one-hot, continuous scaled to [0, 1]) and
    the (N,) mask of rows where every label is known."""
    cols, known = [], np.ones(len(next(iter(labels.values()))), dtype=bool)
    for label in schema:
        y = labels[label.name].astype(np.float64)
        known &= ~np.isnan(y)
        y = np.nan_to_num(y)
        if label.kind == "categorical":
            cols.append(np.eye(label.n_classes)[y.astype(int).clip(0, label.n_classes - 1)])
        elif label.kind == "continuous":
            lo, hi = label.range
            cols.append(((y - lo) / (hi - lo))[:, None])
        else:
            cols.append(y[:, None])
    return np.concatenate(cols, axis=1), known


def fit_leace(codes: np.ndarray, targets: np.ndarray, tol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """codes (N, d), targets (N, k) -> (mean (d,), P (d, d)); erase with x - (x - mean) @ P.T.

    P = W⁺ U Uᵀ W, with W = Σ_xx^(-1/2) the whitening map and U an orthonormal basis of the column space of
    W Σ_xz (Belrose et al., Theorem 4.3).
    """
    x = codes.astype(np.float64)
    mean = x.mean(0)
    xc, zc = x - mean, targets - targets.mean(0)
    sigma_xx = xc.T @ xc / len(x)  # (d, d)
    sigma_xz = xc.T @ zc / len(x)  # (d, k)
    eigval, eigvec = np.linalg.eigh(sigma_xx)
    keep = eigval > tol * eigval.max()
    w = (eigvec[:, keep] / np.sqrt(eigval[keep])) @ eigvec[:, keep].T  # Σ^(-1/2) on the support
    w_pinv = (eigvec[:, keep] * np.sqrt(eigval[keep])) @ eigvec[:, keep].T  # Σ^(1/2)
    u, s, _ = np.linalg.svd(w @ sigma_xz, full_matrices=False)
    u = u[:, s > tol * max(s.max(), tol)]  # (d, r), r <= k
    projection = w_pinv @ u @ u.T @ w  # (d, d)
    return mean.astype(np.float32), projection.astype(np.float32)


def erase(codes: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """(N, d) -> (N, d) codes with the fitted labels' linear information removed."""
    return (codes - (codes - mean) @ projection.T).astype(np.float32)
