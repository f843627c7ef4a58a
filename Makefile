# The two first-run commands (README): `make demo` and `make test`. Both set up .venv/ themselves.
PY := .venv/bin/python
REFERENCE ?= $(or $(GEMMA_EDGE_REFERENCE),$(CURDIR)/../shared/reference)

.PHONY: demo test test-fast venv bench clean

demo:
	@scripts/setup-venv.sh runtime
	@$(PY) -m gemma_edge demo

test:
	@scripts/setup-venv.sh test
	@GEMMA_EDGE_REFERENCE=$(REFERENCE) $(PY) -m pytest

test-fast:
	@scripts/setup-venv.sh test
	@GEMMA_EDGE_REFERENCE=$(REFERENCE) $(PY) -m pytest -m "not slow"

bench:
	@scripts/setup-venv.sh test
	@$(PY) -m bench.run_all

clean:
	rm -rf .venv build *.egg-info .pytest_cache
