"""Conventions every written notebook follows: Jupytext header, the set-up cell, slides, sections."""

from __future__ import annotations

import re

import pytest

import mmcourse
from mmcourse import notebook
from mmcourse.course import load_course

COURSE = load_course()
WRITTEN = [nb for nb in COURSE.notebooks if nb.written]


@pytest.mark.parametrize("nb_info", WRITTEN, ids=lambda n: n.id)
def test_jupytext_header_and_kernel(nb_info):
    text = (COURSE.root / nb_info.path).read_text()
    assert text.startswith("# ---\n# jupyter:\n#   jupytext:"), "keep the Jupytext header (format and kernel)"
    assert "format_name: percent" in text and "name: python3" in text


@pytest.mark.parametrize("nb_info", WRITTEN, ids=lambda n: n.id)
def test_first_code_cell_is_the_set_up_cell(nb_info):
    nb = notebook.read(COURSE.root / nb_info.path)
    first = next(c for c in nb.cells if c.cell_type == "code")
    src = first.source
    assert "setup" in first.metadata.get("tags", [])
    assert 'if "google.colab" in sys.modules' in src, "the Colab install is guarded"
    assert not re.search(r"^\s*[!%]", src, re.M), "no magics in the set-up cell (Jupytext round-trips them badly)"
    pin = re.search(r"mmcourse @ git\+(\S+)@v([0-9.]+)", src)
    assert pin, "the Colab install pins the course package"
    assert pin.group(1) == COURSE.repository and pin.group(2) == mmcourse.__version__
    assert "mmcourse.start(seed=" in src, "the set-up cell picks the device, threads and seeds"


@pytest.mark.parametrize("nb_info", WRITTEN, ids=lambda n: n.id)
def test_title_objectives_and_references(nb_info):
    nb = notebook.read(COURSE.root / nb_info.path)
    md = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert md[0].startswith(f"# {nb_info.id} · {nb_info.title}")
    assert "In this notebook you will" in md[0]
    assert any("## What to remember" in m for m in md) and any("## References" in m for m in md)
    slides = [c for c in nb.cells if c.metadata.get("slideshow", {}).get("slide_type") == "slide"]
    assert len(slides) >= 5, "sections start slides for presenting"


@pytest.mark.parametrize("nb_info", WRITTEN, ids=lambda n: n.id)
def test_no_downloads_at_run_time(nb_info):
    text = (COURSE.root / nb_info.path).read_text()
    for needle in ("urlopen", "requests.get", "wget ", "hf_hub_download", "from_pretrained(", "torch.hub.load", "download=True"):
        assert needle not in text
