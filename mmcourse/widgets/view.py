"""The one way the course's widgets show a figure: a control above an output that redraws on change."""

from __future__ import annotations

from typing import Any, Callable

import ipywidgets as w
import matplotlib.pyplot as plt
from IPython.display import display

def figure_view(control, render: Callable[[Any], Any]):
    """A ``VBox([control, output])``: ``render(control.value)`` returns a matplotlib figure, shown in
    the output now and again every time the control's value changes."""
    out = w.Output()

    def update(change=None):
        with out:
            out.clear_output(wait=True)
            fig = render(control.value)
            display(fig)
            if plt.fignum_exists(fig.number):  # a figure pyplot still tracks is a fresh one: let it go
                plt.close(fig)

    control.observe(update, names="value")
    update()
    return w.VBox([control, out])
