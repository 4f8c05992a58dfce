# The two commands of the README. Each sets up what it needs on a fresh machine (a virtual environment in .venv).
#   make run    the main job: CNN vs VGG16 on CIFAR-10 with a report (preset quick; PRESET=seed for the full tutorial)
#               DATA=path/to/cifar-10-python.tar.gz uses a local copy; WEIGHTS=path/to/vgg16_notop.h5 or none
#   make test   the default test tier, what CI runs: every test not marked slow (12 minutes of tests on 2 cores, README;
#               the real-data tests run when ../shared/datasets/cifar-10-python.tar.gz exists)
#   make test-full   every test, the slow tier too (33 minutes): before changing training, models, backends, export
#               or serve
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

# Both tiers print their 25 slowest tests, so that what a test costs stays in sight.
PYTEST := $(VENV)/bin/python -m pytest --durations=25
# Debian's Chromium for the browser tests (report and serve pages), installed where apt-get can (CI runs as root);
# elsewhere those tests skip, and say so.
BROWSER := $(VENV)/.browser

.PHONY: run test test-full clean

# Every backend, at exactly the versions CI tests (constraints.txt); pyproject.toml itself keeps ranges.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/cnnlab compare --preset $(PRESET) $(if $(DATA),--data "$(DATA)") $(if $(WEIGHTS),--weights "$(WEIGHTS)") $(ARGS)

$(BROWSER): $(STAMP)
	command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		timeout 900 sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium' \
		>/dev/null; } || \
		echo "chromium could not be installed: the browser tests will be skipped"
	touch $(BROWSER)

test: $(STAMP) $(BROWSER)
	$(PYTEST) -m "not slow"

test-full: $(STAMP) $(BROWSER)
	HYPOTHESIS_PROFILE=full $(PYTEST)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
