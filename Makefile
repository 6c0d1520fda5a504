# credex — every target sets itself up; `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= var/demo

.PHONY: setup run test bench bench-quick lint typecheck unit protos release-contract clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(STAMP)

## Run the main job: synthetic data, a local federation as separate processes, the consent demo.
run: setup
	$(BIN)/credex-lab demo --dir $(DEMO_DIR)

## Lint, type-check and run the tests.
test: setup lint typecheck unit

## Benchmark: credex against the bare gRPC ceiling, scaling and memory -> bench-results.json.
bench: setup
	$(BIN)/credex-lab bench --dir var/bench --out bench-results.json

bench-quick: setup
	$(BIN)/credex-lab bench --quick --dir var/bench --out bench-results.json

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/buf lint
	$(BIN)/buf breaking --against protos/released.binpb

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest

## Regenerate the committed gRPC/protobuf code under credex/v1 from protos/.
protos: setup
	$(BIN)/python tools/protogen.py --out .

## Make the current contract the one `buf breaking` protects (after a release, on purpose).
release-contract: setup
	$(BIN)/buf build --exclude-source-info -o protos/released.binpb

clean:
	rm -rf $(VENV) var build *.egg-info .mypy_cache .ruff_cache .pytest_cache
