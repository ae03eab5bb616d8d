# vaelib: `make test` sets everything up and runs the tests; `make book` builds the book.
#   make setup                 .venv with PyTorch and vaelib[notebooks,dev] (once; fast afterwards)
#   make test                  setup, data, pytest (PYTEST_FLAGS="-m 'not book'" passes flags on)
#   make book [PROFILE=quick]  setup, data, execute the notebooks and render book/_build/html
#                              (REPORT_FLAGS="--only 03_mnist" re-executes one chapter; JOBS=1 one at a time)
#   make pdf  [PROFILE=quick]  the same, then book/_build/pdf/book.pdf
#   make lint | bench | clean-build

PYTHON ?= .venv/bin/python
PROFILE ?= default
# Extra flags for `python -m vaelib.report build`, e.g. --only 03_mnist or --skip-execute.
REPORT_FLAGS ?=
# Notebooks executed side by side, each with its share of the cores: on 2 cores, two notebooks with one
# thread each finish the book sooner than one after another with two threads (book/rerun.md).
JOBS ?= 2
# Extra flags for pytest in `make test`, e.g. -m "not book", or CI's live log of the quick build's progress.
PYTEST_FLAGS ?=
VENV := $(patsubst %/bin/python,%,$(PYTHON))
SETUP_STAMP := $(VENV)/.vaelib-setup
SHARED_DATA ?= ../shared/data

# Remember whether the caller chose a data directory before defaulting it: `make data` links the shared
# copies only into the default one.
ifeq ($(strip $(VAELIB_DATA)),)
DATA_DEFAULTED := 1
endif
export VAELIB_DATA ?= $(CURDIR)/data

.PHONY: setup data test book pdf lint bench clean-build

setup: $(SETUP_STAMP)

# Re-run when pyproject.toml changes. torch is installed only if missing: the pinned pair is the one the
# machine's local wheels provide, and reinstalling it would take minutes.
$(SETUP_STAMP): pyproject.toml
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install -e '.[notebooks,dev,cluster]'
	@touch $@

data:
ifdef DATA_DEFAULTED
	@if [ -d "$(SHARED_DATA)" ] && ls "$(SHARED_DATA)"/*.npz >/dev/null 2>&1; then \
		mkdir -p data; \
		for f in "$(SHARED_DATA)"/*.npz; do ln -sfn "$$(cd "$$(dirname "$$f")" && pwd)/$$(basename "$$f")" data/; done; \
		echo "data: linked $(SHARED_DATA)/*.npz into ./data; outside make, run: export VAELIB_DATA=$(CURDIR)/data"; \
	else \
		echo "data: no $(SHARED_DATA)/*.npz; put mnist.npz, cifar10.npz and freyface.npz in ./data"; \
	fi
else
	@echo "data: using VAELIB_DATA=$(VAELIB_DATA)"
endif

test: setup data
	$(PYTHON) -m pytest -q $(PYTEST_FLAGS)

book: setup data
	$(PYTHON) -m vaelib.report build --profile $(PROFILE) --jobs $(JOBS) $(REPORT_FLAGS)

pdf: setup data
	$(PYTHON) -m vaelib.report build --profile $(PROFILE) --jobs $(JOBS) --pdf $(REPORT_FLAGS)

lint: setup
	$(PYTHON) -m ruff check .

bench: setup data
	$(PYTHON) bench/bench_epoch.py

clean-build:
	rm -rf build book/_build
