"""Cross-modal retrieval helpers, ``mmcourse.retrieval``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmcourse.retrieval import cosine_similarity, recall_at_k, recall_table, retrieve


def _shifted(n: int) -> torch.Tensor:
    """An (n, n) similarity where each row's own column is the 2nd best (column i+1 is the best)."""
    sim = torch.zeros(n, n)
    idx = torch.arange(n)
    sim[idx, idx] = 0.5
    sim[idx, (idx + 1) % n] = 1.0
    return sim


# --------------------------------------------------------------------------------------- cosine


def test_cosine_matches_torch_pairwise():
    g = torch.Generator().manual_seed(0)
    # float64: the two normalise in a different order, which float32 rounds differently
    a, b = torch.randn(7, 16, generator=g, dtype=torch.float64), torch.randn(5, 16, generator=g, dtype=torch.float64)
    ours = cosine_similarity(a, b)
    reference = F.cosine_similarity(a[:, None, :], b[None, :, :], dim=-1)
    assert ours.shape == (7, 5)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)


def test_cosine_is_scale_invariant_and_bounded():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 8, generator=g), torch.randn(4, 8, generator=g)
    base = cosine_similarity(a, b)
    torch.testing.assert_close(cosine_similarity(3.0 * a, 0.01 * b), base)
    assert (base.abs() <= 1 + 1e-6).all()
    torch.testing.assert_close(cosine_similarity(a, a).diagonal(), torch.ones(6))
    torch.testing.assert_close(cosine_similarity(a, -a).diagonal(), -torch.ones(6))


def test_cosine_of_a_zero_vector_is_finite():
    sim = cosine_similarity(torch.zeros(1, 4), torch.ones(2, 4))
    assert torch.isfinite(sim).all()


@pytest.mark.parametrize(
    "a, b",
    [
        (torch.zeros(3, 4), torch.zeros(3, 5)),
        (torch.zeros(4), torch.zeros(3, 4)),
        (torch.zeros(3, 4), torch.zeros(2, 3, 4)),
    ],
)
def test_cosine_shape_errors(a, b):
    with pytest.raises(ValueError, match="same D"):
        cosine_similarity(a, b)


# --------------------------------------------------------------------------------------- retrieve


def test_retrieve_returns_the_top_columns_in_order():
    sim = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]])
    assert retrieve(sim, 2).tolist() == [[1, 2], [0, 2]]
    assert retrieve(sim, 10).shape == (2, 3), "k larger than the gallery is clipped"


# --------------------------------------------------------------------------------------- Recall@K


@pytest.mark.parametrize("k", [1, 2, 5])
def test_identity_is_perfect(k):
    assert recall_at_k(torch.eye(5), k) == 1.0


def test_paired_item_ranked_second():
    sim = _shifted(6)
    assert recall_at_k(sim, 1) == 0.0
    assert recall_at_k(sim, 2) == 1.0
    assert recall_at_k(sim, 6) == 1.0


def test_partial_recall():
    sim = torch.eye(4)
    sim[0] = torch.tensor([0.1, 0.9, 0.5, 0.2])  # row 0: own column ranked 4th
    sim[1] = torch.tensor([0.3, 0.8, 0.9, 0.0])  # row 1: own column ranked 2nd
    assert recall_at_k(sim, 1) == pytest.approx(0.5)
    assert recall_at_k(sim, 2) == pytest.approx(0.75)
    assert recall_at_k(sim, 3) == pytest.approx(0.75)
    assert recall_at_k(sim, 4) == pytest.approx(1.0)


def test_recall_is_monotone_in_k():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(50, 50, generator=g)
    values = [recall_at_k(sim, k) for k in range(1, 51)]
    assert values == sorted(values)
    assert values[-1] == 1.0


def test_ties_do_not_make_a_collapsed_model_perfect():
    sim = torch.zeros(5, 5)  # e.g. every embedding identical
    eye = torch.eye(5, dtype=torch.bool)
    assert recall_at_k(sim, 1) < 1.0
    assert recall_at_k(sim, 1) == pytest.approx(recall_at_k(sim, 1, eye))


def test_recall_returns_a_python_float():
    assert isinstance(recall_at_k(torch.eye(3), 1), float)


def test_relevant_diagonal_agrees_with_the_default():
    g = torch.Generator().manual_seed(3)
    sim = torch.randn(20, 20, generator=g)
    eye = torch.eye(20, dtype=torch.bool)
    for k in (1, 3, 10):
        assert recall_at_k(sim, k, eye) == pytest.approx(recall_at_k(sim, k))


def test_relevant_accepts_any_relevant_item():
    sim = _shifted(4)  # row i's best column is i+1
    eye = torch.eye(4, dtype=torch.bool)
    assert recall_at_k(sim, 1, eye) == 0.0
    next_item = eye.roll(1, dims=1)  # row i: column i+1 is relevant
    assert recall_at_k(sim, 1, next_item) == 1.0
    both = eye | next_item
    assert recall_at_k(sim, 1, both) == 1.0
    nothing = torch.zeros(4, 4, dtype=torch.bool)
    assert recall_at_k(sim, 4, nothing) == 0.0


def test_relevant_with_a_rectangular_matrix():
    # 2 images, 4 captions (2 per image)
    sim = torch.tensor([[0.9, 0.1, 0.8, 0.2], [0.6, 0.3, 0.7, 0.4]])
    relevant = torch.tensor([[True, False, True, False], [False, True, False, True]])
    assert recall_at_k(sim, 1, relevant) == pytest.approx(0.5)
    assert recall_at_k(sim, 3, relevant) == pytest.approx(1.0)


def test_recall_errors():
    with pytest.raises(ValueError, match="similarity"):
        recall_at_k(torch.zeros(5), 1)
    with pytest.raises(ValueError, match="similarity"):
        recall_at_k(torch.zeros(2, 2, 2), 1)
    with pytest.raises(ValueError, match="k"):
        recall_at_k(torch.eye(3), 0)
    with pytest.raises(ValueError, match="relevant"):
        recall_at_k(torch.eye(3), 1, torch.eye(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="relevant"):
        recall_at_k(torch.eye(3), 1, torch.eye(3, dtype=torch.bool)[:, :2])


# --------------------------------------------------------------------------------------- table


def test_recall_table_both_directions():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(8, 4, generator=g)
    txt = img + 0.01 * torch.randn(8, 4, generator=g)
    relevant = torch.eye(8, dtype=torch.bool)
    table = recall_table(img, txt, relevant, ks=(1, 5))
    assert set(table) == {"image→text", "text→image"}
    assert table["image→text"] == {1: 1.0, 5: 1.0}
    assert table["text→image"] == {1: 1.0, 5: 1.0}


def test_recall_table_directions_differ_for_an_asymmetric_case():
    # each image's best text is its own, but text 1 lies closer to image 0 than to its own image 1
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.2]])
    relevant = torch.eye(2, dtype=torch.bool)
    table = recall_table(img, txt, relevant, ks=(1, 2))
    sim = cosine_similarity(img, txt)
    assert table["image→text"][1] == pytest.approx(recall_at_k(sim, 1, relevant))
    assert table["text→image"][1] == pytest.approx(recall_at_k(sim.T, 1, relevant.T))
    assert table["text→image"][1] == pytest.approx(0.5)
    assert table["image→text"][1] == pytest.approx(1.0)
    assert table["image→text"][2] == table["text→image"][2] == 1.0


# --------------------------------------------------------------------------------------- vector arithmetic


def test_analogy_search_scales_each_term_and_ranks_by_cosine():
    from mmcourse.retrieval import analogy_search

    # image along x (long), minus along x (short), plus along y: the unit terms give the query (0, 1)
    image, minus, plus = torch.tensor([[8.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[0.0, 0.5]])
    angles = torch.tensor([0.0, 0.6, 1.5, 1.2, 3.0])
    gallery = torch.stack([angles.cos(), angles.sin()], dim=1) * torch.tensor([[5.0], [1.0], [0.2], [1.0], [1.0]])
    top = analogy_search(image, minus, plus, gallery, 3)
    assert top.tolist() == [[2, 3, 1]]  # nearest angles to pi/2, whatever the gallery lengths
    # the same as ranking by cosine with the sum of unit vectors, for a batch of queries
    g = torch.Generator().manual_seed(0)
    a, m, p, gal = (torch.randn(4, 6, generator=g) for _ in range(4))
    q = F.normalize(a, dim=1) - F.normalize(m, dim=1) + F.normalize(p, dim=1)
    assert torch.equal(analogy_search(a, m, p, gal, 2), cosine_similarity(q, gal).topk(2, dim=1).indices)
