# The two commands of the README. Each sets up what it needs on a fresh machine (a virtual environment in .venv).
#   make run    the main job: CNN vs VGG16 on CIFAR-10 with a report (preset quick; PRESET=seed for the full tutorial)
#               DATA=path/to/cifar-10-python.tar.gz uses a local copy; WEIGHTS=path/to/vgg16_notop.h5 or none
#   make test   the test suite (the real-data tests run when ../shared/datasets/cifar-10-python.tar.gz exists)
# Both install all three Keras backends at the versions in constraints.txt; `make run EXTRAS=jax KERAS_BACKEND=jax`
# sets up and uses JAX alone (a .venv already made is kept: `make clean` first). The test suite expects all three.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PRESET ?= quick
DATA ?=
WEIGHTS ?=
ARGS ?=
EXTRAS ?= tensorflow,jax,torch,export,serve,test

.PHONY: run test clean

# Every backend, at exactly the versions CI tests (constraints.txt); pyproject.toml itself keeps ranges.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/cnnlab compare --preset $(PRESET) $(if $(DATA),--data "$(DATA)") $(if $(WEIGHTS),--weights "$(WEIGHTS)") $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
