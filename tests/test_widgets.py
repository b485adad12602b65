"""Widgets: the pure render works on its own, and the ipywidgets view re-renders when the caption changes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from mmcourse.models import DiffusionModel  # noqa: E402
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


# ------------------------------------------------------------------------------ guidance slider


def _guidance_explorer(with_metrics=True):
    from mmcourse.widgets.guidance import GuidanceExplorer

    g = torch.Generator().manual_seed(0)
    # the "samples" of 2 captions, 3 each, at three weights; each w's images are filled with w / 10
    samples = {w: torch.full((2, 3, 3, 8, 8), w / 10) + 0.01 * torch.rand(2, 3, 3, 8, 8, generator=g) for w in (0.0, 1.5, 3.5)}
    metrics = {w: {"fidelity": 0.5 + w / 10, "diversity": 0.3 - w / 20} for w in samples} if with_metrics else None
    return GuidanceExplorer(samples, ["a red circle", "a blue star"], metrics)


def test_guidance_render_shows_the_images_of_the_nearest_weight():
    import matplotlib.pyplot as plt

    ex = _guidance_explorer()
    fig = ex.render(1.2)  # snaps to 1.5
    assert ex.last_w == 1.5
    shown = fig.axes[0].images[0].get_array()
    assert shown.shape == (16, 24, 3) and abs(float(shown.mean()) - 0.155) < 0.01
    assert "w = 1.5" in fig.axes[0].get_title() and "guidance_scale 2.5" in fig.axes[0].get_title()
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a red circle", "a blue star"]
    assert any("fidelity" in ax.get_title() for ax in fig.axes)
    plt.close(fig)
    fig = _guidance_explorer(with_metrics=False).render(9.0)
    assert len(fig.axes) == 1 and "w = 3.5" in fig.axes[0].get_title()
    plt.close(fig)


def test_guidance_widget_redraws_when_the_slider_moves():
    ex = _guidance_explorer()
    view = ex.widget()
    assert ex.last_w == 0.0 and len(view.children) == 2
    ex.slider.value = 3.5
    assert ex.last_w == 3.5


def test_guidance_explorer_rejects_inconsistent_samples():
    import pytest

    from mmcourse.widgets.guidance import GuidanceExplorer

    with pytest.raises(ValueError, match="same shape"):
        GuidanceExplorer({0.0: torch.zeros(2, 3, 3, 8, 8), 1.0: torch.zeros(2, 2, 3, 8, 8)}, ["a", "b"])
    with pytest.raises(ValueError, match="2 captions"):
        GuidanceExplorer({0.0: torch.zeros(3, 2, 3, 8, 8)}, ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        GuidanceExplorer({}, [])


def test_guidance_explorer_samples_every_weight_from_the_same_noise():
    from mmcourse import diffusion as D
    from mmcourse.widgets.guidance import GuidanceExplorer

    torch.manual_seed(0)
    model = DiffusionModel(image_size=8, channels=(8, 16), emb_dim=16).eval()
    ex = GuidanceExplorer.from_model(model, ["a red circle", "a blue star"], [0.0, 2.0], per_caption=2, steps=3, seed=4,
                                     metric_fn=lambda x, caps: {"fidelity": 0.5, "diversity": x.std(dim=1).mean().item()})
    assert ex.samples[0.0].shape == (2, 2, 3, 8, 8)
    flat = D.sample(model, ["a red circle", "a red circle", "a blue star", "a blue star"], guidance_scale=2.0, steps=3, seed=4)
    torch.testing.assert_close(ex.samples[2.0].flatten(0, 1), flat)
    assert set(ex.metrics) == {0.0, 2.0}


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

    def scale(self):
        return self.logit_scale.exp()

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
