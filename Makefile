# Local and CI set-up. `make run` and `make test` are the README's two commands:
# each creates .venv on first use (pinned deps; CPU torch from builder/requirements-torch-cpu.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REQS := builder/requirements.txt builder/requirements-voxtral.txt builder/requirements-torch-cpu.txt \
        builder/requirements-nodeps.txt builder/requirements-dev.txt

.PHONY: setup run serve test bench system-deps

setup: $(STAMP)

$(STAMP): $(REQS)
	$(PYTHON) -m venv $(VENV)
	# One resolve: accelerate depends on torch, so torch's pin must be in the same command.
	$(PY) -m pip install --quiet -r builder/requirements-torch-cpu.txt -r builder/requirements.txt \
	      -r builder/requirements-voxtral.txt -r builder/requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -r builder/requirements-nodeps.txt
	touch $(STAMP)

# Speech synthesis and conversion used by the tests and benchmarks (Debian packages).
system-deps:
	@command -v espeak-ng >/dev/null && command -v sox >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq espeak-ng sox >/dev/null)

run: $(STAMP)
	$(PY) handler.py

serve: $(STAMP)
	$(PY) handler.py --rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port 8000

test: $(STAMP) system-deps
	$(PY) -m pytest

bench: $(STAMP) system-deps
	$(PY) bench/run.py
