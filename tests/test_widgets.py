"""Widgets: the pure render works on its own, and the ipywidgets view re-renders when the caption changes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from mmcourse.widgets.retrieval import RetrievalExplorer, pca_2d  # noqa: E402


def _explorer():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 3, 8, 8, generator=g)
    emb = torch.randn(40, 5, generator=g)
    words = {"left": emb[3], "right": emb[17]}

    def embed_text(texts):
        return torch.stack([words.get(t, torch.zeros(5)) + 1e-3 for t in texts])

    return RetrievalExplorer(images, emb, embed_text, examples=["left", "right"], k=4)


def test_search_finds_the_matching_image_first():
    ex = _explorer()
    idx, scores, xy = ex.search("left")
    assert idx[0] == 3 and scores == sorted(scores, reverse=True) and xy.shape == (2,)
    assert ex.search("right")[0][0] == 17


def test_render_returns_a_figure_with_titles():
    import matplotlib.pyplot as plt

    ex = _explorer()
    fig = ex.render("left")
    titles = [ax.get_title() for ax in fig.axes]
    assert any("principal components" in t for t in titles)
    assert ex.last_indices[0] == 3
    plt.close(fig)


def test_widget_updates_when_the_caption_changes():
    ex = _explorer()
    view = ex.widget()
    assert ex.last_indices[0] == 3
    ex.query_box.value = "right"
    assert ex.last_indices[0] == 17
    assert len(view.children) == 2


def test_pca_2d_projects_onto_the_top_directions():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 3, generator=g) * torch.tensor([5.0, 2.0, 0.1])
    _, basis, xy = pca_2d(x)
    assert xy.shape == (200, 2)
    assert basis[:, 0].abs().argmax() == 0 and basis[:, 1].abs().argmax() == 1


def _temperature():
    from mmcourse.widgets.temperature import TemperatureExplorer

    g = torch.Generator().manual_seed(0)
    img = torch.randn(6, 8, generator=g)
    txt = img + 0.3 * torch.randn(6, 8, generator=g)
    return TemperatureExplorer(img, txt, [f"caption {i}" for i in range(6)], row=2)


def test_temperature_sharpens_the_row_and_large_tau_gives_ln_n():
    import math

    ex = _temperature()
    hot, cold = ex.probabilities(10.0), ex.probabilities(0.01)
    assert torch.allclose(hot.sum(), torch.tensor(1.0, dtype=hot.dtype)) and hot.max() < 0.25
    assert cold.argmax().item() == 2 and cold.max() > 0.99
    assert abs(ex.loss(1e4).item() - math.log(6)) < 1e-3


def test_temperature_render_updates_one_figure():
    ex = _temperature()
    fig = ex.render(1.0)
    heights_warm = [b.get_height() for b in ex._bars]
    assert ex.render(0.01) is fig
    heights_cold = [b.get_height() for b in ex._bars]
    assert max(heights_cold) > max(heights_warm) and "tau = 0.01" in ex._ax_bar.get_title()


def test_temperature_widget_follows_the_slider_and_rejects_bad_input():
    import pytest

    from mmcourse.widgets.temperature import TemperatureExplorer

    ex = _temperature()
    ex.widget(tau=1.0)
    ex.slider.value = 0.01
    assert max(b.get_height() for b in ex._bars) > 0.99
    with pytest.raises(ValueError, match="positive"):
        ex.render(0.0)
    with pytest.raises(ValueError, match="paired"):
        TemperatureExplorer(torch.zeros(3, 4), torch.zeros(4, 4), ["a", "b", "c"])

