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


# ------------------------------------------------------------------------------ prompt playground


class _ToyClip(torch.nn.Module):
    """Words map to fixed directions; an image's embedding is its mean colour (so red images are 'red')."""

    def __init__(self):
        super().__init__()
        from mmcourse.data.tokenizer import default_tokenizer

        self.tokenizer = default_tokenizer()
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))
        self.words = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0], "blue": [0.0, 0.0, 1.0]}

    def tokenize(self, texts):
        return self.tokenizer(texts)

    def encode_text(self, texts):
        out = torch.full((len(texts), 3), 0.01)
        for i, t in enumerate(texts):
            for w in self.tokenizer.split(t):
                out[i] += torch.tensor(self.words.get(w, [0.0, 0.0, 0.0]))
        return out

    def encode_image(self, images):
        return images.mean(dim=(2, 3))


def _playground():
    from mmcourse.widgets.prompts import PromptPlayground

    images = torch.zeros(2, 3, 8, 8)
    images[0, 0] = 1.0  # red
    images[1, 2] = 1.0  # blue
    return PromptPlayground(_ToyClip(), images, ["red", "green", "blue"], template="a {} shape", top=2,
                            titles=["a red image", "a blue image"])


def test_playground_probabilities_follow_the_words():
    pg = _playground()
    p = pg.probabilities("a {} shape", ["red", "green", "blue"], 0)
    assert torch.allclose(p.sum(), torch.tensor(1.0)) and p.argmax().item() == 0
    assert pg.probabilities("a {} shape", ["red", "green", "blue"], 1).argmax().item() == 2
    # a template that names a colour pushes every class towards it: the red image now prefers nothing in particular
    flat = pg.probabilities("a blue {}", ["red", "green", "blue"], 0)
    assert flat.max() - flat.min() < p.max() - p.min()


def test_playground_render_updates_one_figure_and_names_unknown_words():
    import matplotlib.pyplot as plt

    pg = _playground()
    fig = pg.render()
    assert pg.last_classes == ["red", "green", "blue"] and pg.last_unknown == []
    assert "every word is in the vocabulary" in pg._ax_bar.get_xlabel()
    labels = [t.get_text() for t in pg._ax_bar.get_yticklabels()]
    assert len(labels) == 2 and labels[0] == "red"  # top 2, most probable first
    assert pg.render("a {} thing", "vermilion, blue", 1) is fig
    assert pg.last_unknown == ["vermilion"] and "vermilion" in pg._ax_bar.get_xlabel()
    assert [t.get_text() for t in pg._ax_bar.get_yticklabels()][0] == "blue"
    assert "a blue image" in pg._ax_img.get_title()
    widths = [b.get_width() for b in pg._bars]
    assert abs(sum(widths) - 1.0) < 1e-5  # two classes shown, two bars, probabilities summing to 1
    plt.close(fig)


def test_playground_rejects_bad_input():
    import pytest

    from mmcourse.widgets.prompts import PromptPlayground, parse_classes

    pg = _playground()
    with pytest.raises(ValueError, match="exactly one"):
        pg.render("a photo", "red, blue", 0)
    with pytest.raises(ValueError, match="at least one"):
        pg.render("a {}", " , ", 0)
    with pytest.raises(ValueError, match="index"):
        pg.render("a {}", "red", 5)
    with pytest.raises(ValueError, match="titles"):
        PromptPlayground(_ToyClip(), torch.zeros(2, 3, 4, 4), ["red"], titles=["one"])
    assert parse_classes("red square,\n blue circle ,, green") == ["red square", "blue circle", "green"]


def test_playground_widget_reacts_and_reports_errors():
    pg = _playground()
    view = pg.widget()
    assert pg.last_probs.argmax().item() == 0
    pg.image_slider.value = 1
    assert pg.last_classes[pg.last_probs.argmax().item()] == "blue"
    pg.classes_box.value = "green, blue"
    assert pg.last_classes == ["green", "blue"]
    pg.template_box.value = "no placeholder"
    assert "exactly one" in pg.message.value and pg.last_classes == ["green", "blue"]
    pg.template_box.value = "a {}"
    assert pg.message.value == "" and len(view.children) == 5
