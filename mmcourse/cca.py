"""Linear canonical correlation analysis: the classical coordinated representation.

CCA finds projections ``w_x``, ``w_y`` that make ``x @ w_x`` and ``y @ w_y`` maximally correlated,
then the next pair uncorrelated with the first, and so on:

    (w_x, w_y) = argmax corr(x w_x, y w_y)

Whitening each view (C_xx^{-1/2}, C_yy^{-1/2}) turns this into an SVD of the whitened
cross-covariance T = C_xx^{-1/2} C_xy C_yy^{-1/2}; its singular values are the canonical
correlations. Deep CCA replaces the two linear maps by networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass
class CCA:
    mean_x: Tensor  # (Dx,)
    mean_y: Tensor  # (Dy,)
    w_x: Tensor  # (Dx, k)
    w_y: Tensor  # (Dy, k)
    correlations: Tensor  # (k,), descending

    def transform_x(self, x: Tensor) -> Tensor:
        """Project view-x features (N, Dx) -> (N, k)."""
        return (x.double() - self.mean_x) @ self.w_x

    def transform_y(self, y: Tensor) -> Tensor:
        """Project view-y features (N, Dy) -> (N, k)."""
        return (y.double() - self.mean_y) @ self.w_y


def _inv_sqrt(c: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(c)
    return vecs @ torch.diag(vals.clamp(min=1e-12).rsqrt()) @ vecs.T


def fit_cca(x: Tensor, y: Tensor, dim: int, reg: float = 1e-4) -> CCA:
    """Fit linear CCA on paired rows ``x`` (N, Dx) and ``y`` (N, Dy), keeping ``dim`` components.

    ``reg`` is added to each view's covariance diagonal (ridge), which keeps it invertible when
    features are redundant (e.g. words that never occur). Computed in float64.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"expected paired (N, Dx) and (N, Dy), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not 1 <= dim <= min(x.shape[1], y.shape[1]):
        raise ValueError(f"dim must be between 1 and min(Dx, Dy) = {min(x.shape[1], y.shape[1])}, got {dim}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("CCA inputs contain NaN or inf")
    x, y = x.double(), y.double()
    n = x.shape[0]
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    cxx = xc.T @ xc / (n - 1) + reg * torch.eye(x.shape[1], dtype=x.dtype)
    cyy = yc.T @ yc / (n - 1) + reg * torch.eye(y.shape[1], dtype=y.dtype)
    cxy = xc.T @ yc / (n - 1)
    wx_white, wy_white = _inv_sqrt(cxx), _inv_sqrt(cyy)
    u, s, vh = torch.linalg.svd(wx_white @ cxy @ wy_white)
    return CCA(mx, my, wx_white @ u[:, :dim], wy_white @ vh.T[:, :dim], s[:dim])
