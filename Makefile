# The project's entry points. Each target creates or refreshes .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NAMED_SEGMENT_TESTS := tests/test_processes.py tests/test_faults.py tests/test_resume.py \
	tests/test_dask.py tests/test_sharedmem.py tests/test_stages.py

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-run the install whenever pyproject.toml (or the benchmarks' requirements) changes.
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[all]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml benchmarks/requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]" -r benchmarks/requirements.txt
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/tilewise demo --out out

# Then the suites of worker processes again, on the named shared-memory segments
# that macOS and Windows use (Linux's memfd segments otherwise).
test: $(VENV)/.dev-installed lint
	$(BIN)/python -m pytest
	TILEWISE_SEGMENTS=named $(BIN)/python -m pytest -q $(NAMED_SEGMENT_TESTS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/ci.yml
	$(BIN)/zizmor --offline --quiet .github/workflows/ci.yml

# The whole suite, side by side (about 8 min on 2 cores); the report goes to out/bench.
# It lives in benchmarks/, beside the package and not in its wheel.
bench: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks --out out/bench

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache .hypothesis
