"""A prompt playground: type a template or class descriptions, see the zero-shot probabilities for an image."""

from __future__ import annotations

from typing import Sequence

import ipywidgets as w
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from mmcourse.plots import image_grid
from mmcourse.zeroshot import build_classifier, encode_images, logits_from_features, unknown_words

Tensor = torch.Tensor


def parse_classes(text: str) -> list[str]:
    """Class names or descriptions from a comma- or newline-separated string (empty entries dropped)."""
    if not isinstance(text, str):
        raise TypeError(f"classes must be given as text, got {type(text).__name__}")
    return [c.strip() for c in text.replace("\n", ",").split(",") if c.strip()]


class PromptPlayground:
    """Zero-shot probabilities of a few images under a template and class list you type.

    ``model``: a CLIP with ``encode_image``, ``encode_text`` and ``scale()``; ``images``: (N, 3, H, W)
    in [0, 1] (embedded once, here); ``classnames``: the starting class list; ``titles``: one label per
    image. ``render(template, classes, index)`` is the pure part; the widget calls it on every change.
    """

    def __init__(self, model, images: Tensor, classnames: Sequence[str], *, titles: Sequence[str] | None = None,
                 template: str = "a photo of a {}", top: int = 8) -> None:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3 or not len(images):
            raise ValueError(f"images must be a non-empty (N, 3, H, W) tensor, got "
                             f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
        if titles is not None and len(titles) != len(images):
            raise ValueError(f"{len(titles)} titles for {len(images)} images")
        if top < 1:
            raise ValueError(f"top must be at least 1, got {top}")
        self.model = model
        self.images = images.detach().cpu()
        self.features = encode_images(model, images)  # (N, D), normalised
        with torch.no_grad():
            self.scale = model.scale().float().cpu()  # exp(t), at most 100
        self.classnames = list(classnames)
        self.titles = list(titles) if titles is not None else [f"image {i}" for i in range(len(images))]
        self.template, self.top = template, top
        self.last_probs: Tensor | None = None
        self.last_classes: list[str] = []
        self.last_unknown: list[str] = []
        self._fig = None

    def probabilities(self, template: str, classes: Sequence[str], index: int = 0) -> Tensor:
        """(C,) softmax over ``classes`` for image ``index`` under ``template``; raises ValueError on bad input."""
        if not 0 <= index < len(self.images):
            raise ValueError(f"index must be in 0..{len(self.images) - 1}, got {index}")
        if not classes:
            raise ValueError("type at least one class name or description")
        classifier = build_classifier(self.model, list(classes), [template], warn_unknown=False)
        return logits_from_features(self.features[index:index + 1], classifier.cpu(), self.scale)[0].softmax(0)

    def render(self, template: str | None = None, classes: str | Sequence[str] | None = None, index: int = 0):
        """The figure for one choice: drawn once, then only the image, the bars and the titles change."""
        template = self.template if template is None else template
        names = self.classnames if classes is None else (parse_classes(classes) if isinstance(classes, str) else list(classes))
        probs = self.probabilities(template, names, index)
        texts = [template.format(c) for c in names]
        self.last_probs, self.last_classes = probs, names
        self.last_unknown = unknown_words(self.model, texts)
        if self._fig is None:
            self._draw()
        k = min(self.top, len(names))
        order = probs.argsort(descending=True)[:k].tolist()
        for slot, bar in enumerate(self._bars):
            if slot < k:
                bar.set_width(probs[order[slot]].item())
                bar.set_visible(True)
            else:
                bar.set_visible(False)
        labels = [names[i] for i in order] + [""] * (self.top - k)
        self._ax_bar.set_yticks(range(self.top), [lab[:34] for lab in labels], fontsize=8)
        self._ax_bar.set_title(f'"{template}": top {k} of {len(names)} classes', fontsize=9)
        note = ("unknown words, read as <unk>: " + ", ".join(self.last_unknown)) if self.last_unknown else "every word is in the vocabulary"
        self._ax_bar.set_xlabel(f"probability (softmax of {self.scale.item():.0f} x cosine)\n{note}", fontsize=8)
        self._image.set_data(image_grid(self.images[index]))
        self._ax_img.set_title(self.titles[index][:30], fontsize=9)
        return self._fig

    def _draw(self) -> None:
        fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1, 2.6]})
        self._image = ax_img.imshow(image_grid(self.images[0]), interpolation="nearest")
        ax_img.axis("off")
        self._bars = ax_bar.barh(range(self.top), [0.0] * self.top, color="tab:blue")
        ax_bar.set_xlim(0, 1)
        ax_bar.invert_yaxis()  # most probable on top
        fig.tight_layout()
        plt.close(fig)  # kept and redrawn by the widget, not shown by pyplot
        self._fig, self._ax_img, self._ax_bar = fig, ax_img, ax_bar

    def widget(self, index: int = 0):
        self.template_box = w.Text(value=self.template, description="template", continuous_update=False,
                                   layout=w.Layout(width="60%"))
        self.classes_box = w.Textarea(value=", ".join(self.classnames), description="classes", continuous_update=False,
                                      layout=w.Layout(width="90%", height="60px"))
        self.image_slider = w.IntSlider(value=index, min=0, max=len(self.images) - 1, description="image",
                                        continuous_update=False)
        self.message = w.HTML()
        out = w.Output()

        def update(change=None):
            try:
                fig = self.render(self.template_box.value, self.classes_box.value, self.image_slider.value)
            except ValueError as err:  # a template without "{}", an empty class list: say so, keep the last figure
                self.message.value = f"<span style='color:#b00'>{err}</span>"
                return
            self.message.value = ""
            with out:
                out.clear_output(wait=True)
                display(fig)

        for box in (self.template_box, self.classes_box, self.image_slider):
            box.observe(update, names="value")
        update()
        self._widget = w.VBox([self.template_box, self.classes_box, self.image_slider, self.message, out])
        return self._widget
