# The two first-run commands (README): `make demo` and `make test`. Both set up .venv/ themselves.
# The oracle tests' reference material is vendored in tests/reference/ (GEMMA_EDGE_REFERENCE overrides it).
PY := .venv/bin/python

.PHONY: demo test test-fast venv bench clean

demo:
	@scripts/setup-venv.sh runtime
	@$(PY) -m gemma_edge demo

test:
	@scripts/setup-venv.sh test
	@$(PY) -m pytest

test-fast:
	@scripts/setup-venv.sh test
	@$(PY) -m pytest -m "not slow"

bench:
	@scripts/setup-venv.sh test
	@$(PY) -m bench.run_all

clean:
	rm -rf .venv build *.egg-info .pytest_cache
