"""Linear CCA, ``mmcourse.cca.fit_cca``, checked against scikit-learn's CCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcourse.cca import fit_cca

N, DX, DY, K = 1500, 6, 5, 3


def _corr(a, b) -> float:
    return float(np.corrcoef(np.asarray(a), np.asarray(b))[0, 1])


@pytest.fixture(scope="module")
def views():
    """Two noisy views of a shared 3-d latent, with the latent's components shared to different degrees."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(N, K, generator=g, dtype=torch.float64)
    a = torch.randn(K, DX, generator=g, dtype=torch.float64)
    b = torch.randn(K, DY, generator=g, dtype=torch.float64)
    x = z @ a + 0.5 * torch.randn(N, DX, generator=g, dtype=torch.float64) + 3.0
    y = (z * torch.tensor([1.0, 0.6, 0.3], dtype=torch.float64)) @ b + 0.5 * torch.randn(N, DY, generator=g, dtype=torch.float64) - 1.0
    return x, y, z


@pytest.fixture(scope="module")
def sklearn_scores(views):
    from sklearn.cross_decomposition import CCA

    x, y, _ = views
    model = CCA(n_components=K, scale=False, max_iter=2000, tol=1e-10).fit(x.numpy(), y.numpy())
    # x_scores_/y_scores_ were removed from recent scikit-learn; transform() of the training data is the same
    xs, ys = model.transform(x.numpy(), y.numpy())
    return xs, ys


def test_correlations_match_sklearn(views, sklearn_scores):
    x, y, _ = views
    xs, ys = sklearn_scores
    ours = fit_cca(x, y, K, reg=0.0)
    reference = [_corr(xs[:, k], ys[:, k]) for k in range(K)]
    assert ours.correlations.shape == (K,)
    # sklearn iterates to tol=1e-10 (its correlations agree with the closed form to ~1e-9 in float64)
    np.testing.assert_allclose(ours.correlations.numpy(), reference, rtol=0, atol=1e-6)


def test_directions_match_sklearn_up_to_sign(views, sklearn_scores):
    x, y, _ = views
    xs, ys = sklearn_scores
    ours = fit_cca(x, y, K, reg=0.0)
    px, py = ours.transform_x(x), ours.transform_y(y)
    for k in range(K):
        assert abs(_corr(px[:, k], xs[:, k])) == pytest.approx(1.0, abs=1e-6)
        assert abs(_corr(py[:, k], ys[:, k])) == pytest.approx(1.0, abs=1e-6)


def test_correlations_are_descending_and_in_unit_interval(views):
    x, y, _ = views
    c = fit_cca(x, y, K).correlations
    assert (c[:-1] >= c[1:]).all()
    assert ((c >= 0) & (c <= 1)).all()


def test_projections_have_the_reported_correlations(views):
    x, y, _ = views
    model = fit_cca(x, y, K, reg=0.0)
    px, py = model.transform_x(x), model.transform_y(y)
    assert px.shape == (N, K) and py.shape == (N, K)
    for k in range(K):
        assert _corr(px[:, k], py[:, k]) == pytest.approx(float(model.correlations[k]), abs=1e-6)


def test_projections_are_centred_and_white_within_each_view(views):
    x, y, _ = views
    model = fit_cca(x, y, K, reg=0.0)
    eye = torch.eye(K, dtype=torch.float64)
    for p in (model.transform_x(x), model.transform_y(y)):
        assert torch.allclose(p.mean(0), torch.zeros(K, dtype=torch.float64), atol=1e-9)
        cov = p.T @ p / (N - 1)
        assert torch.allclose(cov, eye, atol=1e-6), cov
    # and the cross-covariance is diagonal: component k only correlates with its partner
    px, py = model.transform_x(x), model.transform_y(y)
    cross = px.T @ py / (N - 1)
    assert torch.allclose(cross, torch.diag(model.correlations), atol=1e-6)


def _r2(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    design = torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype)], 1)
    resid = target - design @ torch.linalg.lstsq(design, target).solution
    return 1 - resid.pow(2).sum(0) / (target - target.mean(0)).pow(2).sum(0)


def test_canonical_space_recovers_the_shared_latent(views):
    x, y, z = views
    model = fit_cca(x, y, K)
    # the 3 canonical x-variates explain the latent nearly as well as all 6 features of x
    r2_cca, r2_all = _r2(model.transform_x(x), z), _r2(x, z)
    assert (r2_cca > 0.85).all(), r2_cca
    assert (r2_cca > r2_all - 0.03).all(), (r2_cca, r2_all)


def test_float32_input_and_regularisation(views):
    x, y, _ = views
    exact = fit_cca(x, y, 2, reg=0.0)
    model = fit_cca(x.float(), y.float(), 2)  # default reg
    assert model.w_x.dtype == torch.float64
    assert model.transform_x(x.float()).dtype == torch.float64
    np.testing.assert_allclose(model.correlations.numpy(), exact.correlations.numpy(), atol=1e-3)
    heavy = fit_cca(x, y, 2, reg=100.0)
    assert (heavy.correlations < exact.correlations).all(), "a large ridge shrinks the correlations"


def test_redundant_features_are_handled_by_reg(views):
    x, y, _ = views
    x_dup = torch.cat([x, x[:, :1], torch.zeros(N, 1, dtype=torch.float64)], 1)  # rank deficient
    model = fit_cca(x_dup, y, 2)
    assert torch.isfinite(model.w_x).all() and torch.isfinite(model.correlations).all()
    assert (model.correlations <= 1 + 1e-6).all()


def test_transform_uses_the_training_means(views):
    x, y, _ = views
    model = fit_cca(x, y, 2)
    assert torch.allclose(model.mean_x, x.mean(0)) and torch.allclose(model.mean_y, y.mean(0))
    shifted = model.transform_x(x[:10] + 1.0) - model.transform_x(x[:10])
    assert torch.allclose(shifted, (torch.ones(1, DX, dtype=torch.float64) @ model.w_x).expand(10, -1))


# --------------------------------------------------------------------------------------- bad input


def test_mismatched_rows(views):
    x, y, _ = views
    with pytest.raises(ValueError, match="paired"):
        fit_cca(x, y[:-1], 2)


@pytest.mark.parametrize("shape", [(N,), (N, DX, 1)])
def test_not_a_matrix(views, shape):
    x, y, _ = views
    with pytest.raises(ValueError, match="paired"):
        fit_cca(torch.zeros(shape, dtype=torch.float64), y, 1)


@pytest.mark.parametrize("dim", [0, -1, DY + 1, DX + 1])
def test_dim_out_of_range(views, dim):
    x, y, _ = views
    with pytest.raises(ValueError, match="dim"):
        fit_cca(x, y, dim)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("view", ["x", "y"])
def test_non_finite_input(views, value, view):
    x, y, _ = views
    x, y = x.clone(), y.clone()
    (x if view == "x" else y)[3, 1] = value
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_cca(x, y, 2)
