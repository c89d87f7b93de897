# Everything runs on a CPU. `make demo` and `make test` set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint clean

setup: $(STAMP)

# After the package, the optional MedSAM2/SAM2 segmenter: sam2 is a source package, built here
# without its CUDA extension against the torch just installed; a failure leaves the rest working.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet 'setuptools>=70.1' && SAM2_BUILD_CUDA=0 $(BIN)/pip install \
		--quiet --no-build-isolation 'sam2==1.1.0' \
		|| echo "warning: sam2 not installed; --segmenter medsam2 is unavailable"
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
