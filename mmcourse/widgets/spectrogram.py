"""The spectrogram explorer of notebook 09: one clip's log-mel spectrogram under the STFT and mel settings a
student picks (n_fft, hop, n_mels, Slaney or HTK). The figure is drawn once; a change recomputes one
log-mel spectrogram and replaces the image (well under 200 ms for a half-second clip)."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from mmcourse import audio as A

Tensor = torch.Tensor

CONVENTIONS = {"Slaney (librosa)": {"htk": False, "norm": "slaney"}, "HTK, no norm (torchaudio)": {"htk": True, "norm": None}}


class SpectrogramExplorer:
    """``render(n_fft, hop, n_mels, convention)`` returns the figure; ``widget()`` puts the four controls above it."""

    def __init__(self, waveform: Tensor, sample_rate: int, title: str = "") -> None:
        self.waveform, self.sample_rate, self.title = A.check_waveform(waveform, name="the clip"), sample_rate, title
        self._fig = None

    def log_mel(self, n_fft: int, hop: int, n_mels: int, convention: str) -> Tensor:
        return A.power_to_db(A.mel_spectrogram(self.waveform, self.sample_rate, n_fft, hop, n_mels,
                                               **CONVENTIONS[convention]))

    def render(self, n_fft: int = 256, hop: int = 64, n_mels: int = 32, convention: str = "Slaney (librosa)"):
        try:
            image = self.log_mel(n_fft, hop, n_mels, convention).numpy()
            message = ""
        except ValueError as err:  # too many mels for this n_fft: say so in the figure
            image, message = None, str(err).split(":")[0]
        if self._fig is None:
            self._fig, self._ax = plt.subplots(figsize=(7, 2.6))  # small: the PNG sent to the browser is most of a redraw
            self._image = self._ax.imshow(image if image is not None else [[0.0]], origin="lower", aspect="auto",
                                          cmap="magma", vmin=-80, vmax=0, interpolation="nearest")
            self._fig.colorbar(self._image, ax=self._ax, label="power (dB)")
            self._ax.set_xlabel("time (s)")
            self._ax.set_ylabel("mel band")
            self._fig.tight_layout()
            plt.close(self._fig)
        duration = self.waveform.shape[-1] / self.sample_rate
        if image is not None:
            self._image.set_data(image)
            self._image.set_extent((0, duration, -0.5, image.shape[0] - 0.5))
            self._ax.set_title(f"{self.title}  n_fft {n_fft} ({1000 * n_fft / self.sample_rate:.0f} ms), hop {hop}: "
                               f"{image.shape[1]} frames x {n_mels} mels, {convention}", fontsize=9)
        else:
            self._ax.set_title(message, fontsize=9, color="red")
        return self._fig

    def widget(self):
        controls = {
            "n_fft": widgets.Dropdown(options=[64, 128, 256, 512, 1024], value=256, description="n_fft"),
            "hop": widgets.Dropdown(options=[16, 32, 64, 128, 256], value=64, description="hop"),
            "n_mels": widgets.IntSlider(value=32, min=8, max=128, step=8, description="n_mels", continuous_update=False),
            "convention": widgets.ToggleButtons(options=list(CONVENTIONS), value="Slaney (librosa)"),
        }
        out = widgets.Output()

        def update(change=None):
            with out:
                out.clear_output(wait=True)
                display(self.render(**{k: c.value for k, c in controls.items()}))

        for c in controls.values():
            c.observe(update, names="value")
        update()
        return widgets.VBox([widgets.HBox([controls["n_fft"], controls["hop"]]), controls["n_mels"],
                             controls["convention"], out])
