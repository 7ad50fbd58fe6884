"""Post-hoc linear concept erasure of released codes (LEACE: Belrose et al., "LEACE: Perfect linear
concept erasure in closed form", NeurIPS 2023).

Training pressure (a critic, an MMD penalty) lowers what codes say about the concealed labels but leaves
some of it linearly readable. LEACE removes exactly the linearly available part in closed form, with
the least change to the codes: after ``erase``, no linear classifier fitted on the fitting data does
better than a constant on the label encodings. Fresh attackers on held-out data measure what is left
(non-linear information and fitting-set/test-set drift); the audit reports both.

What LEACE leaves is what a non-linear attacker (an MLP) reads: groups whose codes share a mean but not a
spread. ``fit_covariance_eraser`` also flattens the ``rank`` directions along which the label groups'
covariances differ most (after LEACE, in whitened coordinates). Like LEACE it is one affine map for every
code, so it needs no labels at release time; it costs those directions' detail in the decodes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

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


def label_groups(labels: dict[str, np.ndarray], schema: LabelSchema, bins: int = 5) -> list[np.ndarray]:
    """Per label, (N,) int group ids: classes of binary/categorical labels, quantile bins of continuous ones."""
    out = []
    for label in schema:
        y = labels[label.name].astype(np.float64)
        if label.kind == "continuous":
            edges = np.unique(np.nanquantile(y, np.linspace(0, 1, bins + 1)[1:-1]))
            out.append(np.where(np.isnan(y), -1, np.digitize(y, edges)))
        else:
            out.append(np.where(np.isnan(y), -1, np.nan_to_num(y)).astype(np.int64))
    return out


def fit_covariance_eraser(codes: np.ndarray, groups: list[np.ndarray], rank: int, tol: float = 1e-4) -> np.ndarray:
    """codes (N, d) (already mean-erased), label groups -> Q (d, d); erase with x - (x - mean) @ Q.T.

    Q projects out, in whitened coordinates, the top-``rank`` eigenvectors of Σ_g p_g (Σ_g - I)², where Σ_g
    is group g's covariance: the directions in which the groups' spreads differ most. Directions without
    variance (those LEACE already flattened) are left alone: ``tol`` is relative to the largest variance.
    """
    x = codes.astype(np.float64)
    xc = x - x.mean(0)
    d = x.shape[1]
    eigval, eigvec = np.linalg.eigh(xc.T @ xc / len(x))
    keep = eigval > tol * eigval.max()
    w = (eigvec[:, keep] / np.sqrt(eigval[keep])) @ eigvec[:, keep].T  # Σ^(-1/2) on the support
    w_pinv = (eigvec[:, keep] * np.sqrt(eigval[keep])) @ eigvec[:, keep].T
    xw = xc @ w.T  # (N, d) whitened
    support = eigvec[:, keep] @ eigvec[:, keep].T  # the identity on the support, in whitened space
    spread = np.zeros((d, d))
    for g in groups:
        for c in np.unique(g[g >= 0]):
            member = g == c
            if member.sum() > d:  # a covariance needs more rows than dimensions
                diff = np.cov(xw[member].T) - support
                spread += member.mean() * diff @ diff
    _, vectors = np.linalg.eigh(spread)
    v = vectors[:, ::-1][:, : min(rank, int(keep.sum()))]  # (d, r)
    return (w_pinv @ v @ v.T @ w).astype(np.float32)


def compose(first: np.ndarray, then: np.ndarray) -> np.ndarray:
    """The projection of erasing with ``first`` and then ``then`` (both about the same mean), as one matrix."""
    eye = np.eye(len(first), dtype=np.float64)
    return (eye - (eye - then.astype(np.float64)) @ (eye - first.astype(np.float64))).astype(np.float32)


def erase(codes: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """(N, d) -> (N, d) codes with the fitted labels' linear information removed."""
    return (codes - (codes - mean) @ projection.T).astype(np.float32)


class CodeEraser(nn.Module):
    """Released codes (B, d) -> x - ((x - mean) @ basis_in) @ basis_out.T: the fitted projection, stored as
    rank-r factors (LEACE of one binary label is rank 1; a d × d matrix would be 38 MB for AIA's 3,072-d g)."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("basis_in", torch.zeros(dim, rank))
        self.register_buffer("basis_out", torch.zeros(dim, rank))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return codes - ((codes - self.mean) @ self.basis_in) @ self.basis_out.T


def projection_factors(projection: np.ndarray, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """P (d, d) -> (V_r, U_r S_r), each (d, r), with x @ P.T == (x @ V_r) @ (U_r S_r).T."""
    u, s, vt = np.linalg.svd(projection.astype(np.float64))
    r = int(np.sum(s > tol * max(s.max(), tol)))
    return vt[:r].T.astype(np.float32), (u[:, :r] * s[:r]).astype(np.float32)


def fit_projection(codes: np.ndarray, labels: dict[str, np.ndarray], schema: LabelSchema, covariance_rank: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """codes (N, d) and their labels -> (mean (d,), P (d, d), the (N,) mask of rows it was fitted on): LEACE of
    ``schema``'s labels, then (``covariance_rank`` > 0) the covariance eraser on what LEACE leaves."""
    labels = {n: labels[n] for n in schema.names}
    targets, known = label_targets(labels, schema)
    mean, projection = fit_leace(codes[known], targets[known])
    if covariance_rank > 0:
        groups = label_groups({n: v[known] for n, v in labels.items()}, schema)
        projection = compose(projection, fit_covariance_eraser(erase(codes[known], mean, projection), groups, covariance_rank))
    return mean, projection, known


def raw_codes_of(method, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, S, S, 3) uint8 faces -> (N, d) float32 codes before any eraser (what an eraser is fitted on)."""
    from .blocks import to_tensor_images

    method.eval()
    with torch.inference_mode():
        return np.concatenate([
            method.raw_codes(to_tensor_images(images[i : i + batch_size], method.device)).float().cpu().numpy()
            for i in range(0, len(images), batch_size)
        ])


def fit_code_eraser(method, train_images: np.ndarray, train_labels: dict[str, np.ndarray], covariance_rank: int = 0,
                    batch_size: int = 256) -> dict:
    """Fit the eraser of ``method.concealed``'s labels on the raw codes of training images and switch it on.

    ``method``: any Method with ``raw_codes`` and ``concealed`` (the concealer: its concealed labels; the
    anonymizer: its private label). LEACE first; ``covariance_rank`` > 0 also flattens that many directions
    where the label groups' spreads differ (``fit_covariance_eraser``), against non-linear attackers.
    Returns what was fitted (for model.json). A new eraser replaces any earlier one: it is fitted on raw codes.
    """
    codes = raw_codes_of(method, train_images, batch_size)
    schema = method.concealed
    mean, projection, known = fit_projection(codes, train_labels, schema, covariance_rank)
    basis_in, basis_out = projection_factors(projection)
    method.cfg.eraser_rank = basis_in.shape[1]
    method.eraser = CodeEraser(codes.shape[1], basis_in.shape[1]).to(method.device)
    for name, value in (("mean", mean), ("basis_in", basis_in), ("basis_out", basis_out)):
        getattr(method.eraser, name).copy_(torch.from_numpy(value))
    return {"method": "LEACE" + (f" + covariance (rank {covariance_rank})" if covariance_rank else ""),
            "labels": schema.names, "fitted_on_codes": int(known.sum()), "covariance_rank": covariance_rank,
            "rank": int(basis_in.shape[1])}
