# Two entry points on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint test-slow test-all wheel-smoke bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vmr demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check vmr tests bench

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

test-all: $(STAMP)
	$(PY) -m pytest -m ""

# the wheel installed into a fresh venv outside the checkout: vmr --help, vmr demo --quick, the
# API example of docs/API.md (a few minutes: the venv installs torch again)
wheel-smoke: $(STAMP)
	PYTHON=$(PY) .ci/wheel_smoke.sh

clean:
	rm -rf demo_out .pytest_cache build *.egg-info

# RecBole's SASRec as the peer baseline (bench/recbole_peer.py) lives in its own environment.
RB_VENV  ?= .venv-recbole
RB_STAMP := $(RB_VENV)/.installed-stamp
.PHONY: recbole-env

$(RB_STAMP): constraints.txt
	python3 -m venv $(RB_VENV)
	$(RB_VENV)/bin/pip install -q --disable-pip-version-check -c constraints.txt \
		'torch==2.14.1' 'recbole==1.2.1' 'numpy<2' 'pandas<2.3' polars
	touch $(RB_STAMP)

recbole-env: $(RB_STAMP)
