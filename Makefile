# Everything runs on a CPU. `make demo` and `make test` set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Segment the shipped colonoscopy example with a box around its polyp.
demo: setup
	$(BIN)/automedseg segment examples/kvasir_seg/images/cju17z0qongpa0993de4boim4.jpg \
		--box 331 271 479 430 --out demo_output
	@echo "demo: wrote demo_output/cju17z0qongpa0993de4boim4_{mask,overlay}.png and .json"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf demo_output .pytest_cache
