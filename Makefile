# Everything runs on a CPU. `make demo` and `make test` set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint clean nnunet-setup

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

# The nnU-Net baseline (benchmarks/nnunet_baseline.py) in its own venv: nnunetv2 pins other
# versions of packages we share (timm); torch and automedseg come from .venv through a .pth.
nnunet-setup: setup
	$(PYTHON) -m venv .venv-nnunet
	$(BIN)/python -c "import site; print(site.getsitepackages()[0])" > \
		"$$(.venv-nnunet/bin/python -c 'import site; print(site.getsitepackages()[0])')/automedseg_main.pth"
	.venv-nnunet/bin/pip install --quiet nnunetv2==2.8.1
	.venv-nnunet/bin/pip install --quiet --no-deps -e .

clean:
	rm -rf demo_output .pytest_cache
