# Two commands (see README): `make course` sets up and opens the course; `make test` runs every test.
# Both create a virtual environment in .venv with Python 3.10+ (override: make PYTHON=python3.12 ...).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: course setup test setup-test publish clean

# JupyterLab refuses to run as root (containers, cloud boxes) unless given --allow-root
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

course: setup
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) notebooks/01_joint_embeddings.py

setup: $(VENV)/.course-installed

test: setup-test
	$(PY) -m pytest

setup-test: $(VENV)/.test-installed

# regenerate what is generated from course.yml and the notebooks: Colab notebooks, README table
publish: setup
	$(VENV)/bin/mmcourse release --out colab
	$(VENV)/bin/mmcourse readme

$(PY):
	$(PYTHON) -m venv $(VENV)

# JupyterLab + Jupytext; .py notebooks open as notebooks (a setting kept inside the venv)
$(VENV)/.course-installed: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[lab]'
	$(VENV)/bin/jupytext-config --settings-file $(VENV)/share/jupyter/lab/settings/overrides.json set-default-viewer python
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test]'
	touch $@

clean:
	rm -rf build .pytest_cache
