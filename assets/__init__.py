"""Bundled course assets (checkpoints, figures); installed as the package ``mmcourse.assets``."""
