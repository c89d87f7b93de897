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

# Segment the shipped colonoscopy examples fully automatically: the shipped polyp prompter
# finds the boxes, LiteMedSAM segments them.
demo: setup
	$(BIN)/automedseg segment examples/kvasir_seg/images/*.jpg --task polyp --out demo_output
	@echo "demo: masks, overlays and JSON in demo_output/"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf demo_output .pytest_cache
