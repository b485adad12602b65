"""A chat with a vision-language model: a generated image, a question you type, the model's answer."""

from __future__ import annotations

import time

import ipywidgets as w
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from mmcourse.data.shapes import make_shapes

Tensor = torch.Tensor


class VLMChat:
    """Ask ``model`` (anything with ``answer(images, questions) -> list[str]``) about images of the shapes
    world. ``reply(seed, question)`` is the pure part: the answer and the milliseconds it took."""

    def __init__(self, model, *, objects: tuple[int, int] = (1, 3), style: str = "photo", size: int = 32) -> None:
        self.model, self.objects, self.style, self.size = model, objects, style, size
        self._cache: dict[int, object] = {}

    def scene(self, seed: int):
        """The image drawn for ``seed`` (and its annotations), made once."""
        if seed not in self._cache:
            self._cache[seed] = make_shapes(1, seed=seed, objects=self.objects, style=self.style, size=self.size, split="all")
        return self._cache[seed]

    def reply(self, seed: int, question: str) -> tuple[str, float]:
        """The model's answer to ``question`` about image ``seed``, and the time it took in milliseconds."""
        image = self.scene(seed).images
        start = time.perf_counter()
        answer = self.model.answer(image, [question])[0]
        return answer, 1000 * (time.perf_counter() - start)

    def widget(self, seed: int = 0, question: str = "how many shapes are there?") -> w.Widget:
        picker = w.IntSlider(value=seed, min=0, max=999, description="image")
        box = w.Text(value=question, description="you:", continuous_update=False, layout=w.Layout(width="420px"))
        said = w.HTML()
        picture = w.Output()

        def show_image(change=None) -> None:
            with picture:
                picture.clear_output(wait=True)
                fig, ax = plt.subplots(figsize=(2.2, 2.2))
                ax.imshow(self.scene(picker.value).images[0].permute(1, 2, 0).numpy(), interpolation="nearest")
                ax.set_title(f"image {picker.value}", fontsize=9)
                ax.axis("off")
                display(fig)
                plt.close(fig)

        def answer(change=None) -> None:
            try:
                text, ms = self.reply(picker.value, box.value)
                said.value = f"<b>model:</b> {text or '(nothing)'} <span style='color:gray'>({ms:.0f} ms)</span>"
            except (ValueError, TypeError) as err:
                said.value = f"<span style='color:#d93025'>{err}</span>"

        picker.observe(lambda c: (show_image(), answer()), names="value")
        box.observe(answer, names="value")
        show_image()
        answer()
        return w.VBox([picker, picture, box, said])
