# kanscope — `make run` starts the product, `make test` runs every check (what CI runs).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint bench clean lock

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: 2.13.0 is a local CPU wheel here; a bare `torch` pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q "torch==2.13.0"
	# every version pinned to the tested set (requirements.lock, `make lock` rewrites it)
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev]"
	# build kan_core's C++ operators (~15-25 s) and compile its numba kernels (~10-20 s) once
	# into their on-disk caches
	$(BIN)/python -m kan_core.fused
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/kanscope serve

lint: setup
	$(BIN)/ruff check kan_core app tests benchmarks
	$(BIN)/ruff format --check kan_core app tests benchmarks
	$(BIN)/mypy kan_core app
	$(BIN)/lint-imports  # the dependency contracts in pyproject.toml ([tool.importlinter])
	$(BIN)/clang-format --dry-run --Werror kan_core/csrc/*.cpp

# pytest-xdist: two workers, one test file per worker at a time (each with its own schema or
# private servers); `make test PYTEST_WORKERS=` runs serially. 1063 tests on the idle 2-core
# machine: 8 min 53 s with two workers (session 8; README says what made it faster)
PYTEST_WORKERS ?= 2
XDIST := $(if $(PYTEST_WORKERS),-n $(PYTEST_WORKERS) --dist loadfile)

test: setup lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 $(XDIST)

test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow and not e2e"

bench: setup
	$(BIN)/python -m pip install -q "pykan==0.2.8" matplotlib pyyaml
	$(BIN)/python benchmarks/bench_kan_core.py --compile
	$(BIN)/python benchmarks/bench_symbolic.py

# pin what the tested venv holds (torch without its +cpu tag: the CUDA builds of the same
# version satisfy it too)
lock: setup
	{ echo "# kanscope's tested versions: pip install -c requirements.lock ... (make lock)"; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed -E 's/\+cpu$$//'; } > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
