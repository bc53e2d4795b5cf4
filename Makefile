# Two entry points (README): `make demo` and `make test`. Each creates or reuses .venv.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv demo demo-compare test test-all lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,dev]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

venv: $(STAMP)

# Synthesise a SYSU-MM01-layout data set (96 test ids), evaluate the untrained tiny MVD, train
# it with id+tri+kldiv on CPU (a few minutes), evaluate, print a summary (issue 18).
demo: $(STAMP)
	$(VENV)/bin/mvd demo

# id+tri vs id+tri+kldiv on the demo's data, 3 seeds each (~6x the demo's time).
demo-compare: $(STAMP)
	$(VENV)/bin/mvd demo --compare

# The full default test suite (both backends, parity); slow tests: `make test-all`.
# Two pytest workers (one per core; every test runs single-threaded), each module on one worker
# so its module fixtures are built once (tests/conftest.py groups them).
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 --dist loadgroup

test-all: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -m ""

bench: $(STAMP)
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_train.py --backend torch mindspore

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
