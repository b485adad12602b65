"""ipywidgets views over pure functions (each view's ``render`` can be called and timed on its own)."""
