# The two commands of the README. Each sets up what it needs on a fresh machine (a virtual environment in .venv).
#   make run    the main job: train the seed model (DATA=path/to/cifar-10-python.tar.gz to use a local copy)
#   make test   the test suite (the real-data tests run when ../shared/datasets/cifar-10-python.tar.gz exists)

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PRESET ?= seed
DATA ?=
ARGS ?=

.PHONY: run test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/cnnlab train --preset $(PRESET) $(if $(DATA),--data $(DATA)) $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
