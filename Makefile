# Two entry points, each usable as the first command on a fresh machine:
#   make demo   create .venv, install svdeploy, export the shipped demo model and generate with it
#   make test   create .venv, install svdeploy with its test extras, run lint and the test suite
#   make lint   ruff check and mypy (configured in pyproject.toml)
#   make demo-model  rebuild the shipped demo model from scratch (svd-data + svd-train, ≤ 90 min)
# and two for maintainers:
#   make lock        regenerate the lock of every dependency version (see "Installing" in README.md)
#   make fresh-test  clone the committed HEAD into $(FRESH) and run `make test` there, timed
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
FRESH  ?= ../svdeploy-fresh

# Installs are constrained by locks/<python>-<platform>-<machine>.txt, every dependency of every
# extra pinned by pip-compile for that interpreter and platform (py311-linux-x86_64 is committed).
# Where no lock matches, pyproject.toml's ranges apply and a note says so; `LOCK=` forces that.
LOCK_TAG := $(shell $(PYTHON) -c 'import platform, sys; print("py%d%d-%s-%s" % (*sys.version_info[:2], sys.platform, platform.machine()))' 2>/dev/null)
LOCK     ?= locks/$(LOCK_TAG).txt
PIP_LOCK  = $(if $(wildcard $(LOCK)),-c $(LOCK))
LOCK_NOTE = $(if $(wildcard $(LOCK)),,echo "note: no lock for $(LOCK_TAG) in locks/; installing from pyproject.toml's version ranges")
PIP_TOOLS := pip-tools==7.7.0
# `make lock` keeps every pin that still satisfies pyproject.toml; UPGRADE=1 re-resolves all to the newest.
UPGRADE ?=

.PHONY: demo demo-model test lint install install-test lock fresh-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade $(PIP_LOCK) pip "setuptools>=77" wheel

# Stamps record what was installed, and are redone when pyproject.toml or the lock changes.
# svdeploy is built with the venv's (locked) setuptools: no unpinned build environment.
$(VENV)/.installed-run: pyproject.toml $(wildcard $(LOCK)) | $(BIN)/python
	@$(LOCK_NOTE)
	$(BIN)/python -m pip install --quiet --no-build-isolation $(PIP_LOCK) -e ".[onnx]"
	touch $@

$(VENV)/.installed-test: pyproject.toml $(wildcard $(LOCK)) | $(BIN)/python
	@$(LOCK_NOTE)
	$(BIN)/python -m pip install --quiet --no-build-isolation $(PIP_LOCK) -e ".[onnx,test]"
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed-run
	$(BIN)/python -m svdeploy.demo --out outputs

# Renders the moving-shapes data into build/demo-model, trains (resuming an interrupted run),
# writes svdeploy/assets/demo and measures it (svd-bench quality) into its MODEL.md.
demo-model: $(VENV)/.installed-run
	$(BIN)/python -m svdeploy.demo_model --work build/demo-model --evaluate

# The habits that keep the tree tidy: lint (pyflakes, pycodestyle at 100 columns, import order),
# the format (`ruff format --check`: run `ruff format svdeploy tests` to apply it) and a type
# check of the core and the runtime (the files are listed in pyproject.toml).
lint: $(VENV)/.installed-test
	$(BIN)/python -m ruff check svdeploy tests
	$(BIN)/python -m ruff format --check svdeploy tests
	$(BIN)/python -m mypy

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# pip-compile resolves with pip's own configuration (pip config list: indexes, find-links), so
# torch is the CPU build (+cpu) that configuration serves; index URLs are not written into the lock.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PIP_LOCK) "$(PIP_TOOLS)"
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --all-extras --strip-extras \
	    --allow-unsafe --no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade) \
	    -o locks/$(LOCK_TAG).txt pyproject.toml locks/build-tools.in

# What a new user or CI meets: only committed files, a new .venv, the lock. git clone refuses an
# existing $(FRESH), so nothing is overwritten; remove it before the next run.
fresh-test:
	git clone --quiet . $(FRESH)
	@start=$$(date +%s); $(MAKE) -C $(FRESH) test; rc=$$?; \
	echo "fresh clone of $$(git rev-parse --short HEAD) in $(FRESH): make test exit $$rc after $$(( $$(date +%s) - start )) s"; \
	exit $$rc

clean:
	rm -rf $(VENV) outputs build *.egg-info rank_0
