# The README's two commands: `make demo` and `make test`. Each creates .venv with python3 if it is missing,
# installs torch + torchvision first as a pinned pair, then this package with its test extra.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

# torch 2.14.1 / torchvision 0.29.1 (x86_64); aarch64 wheels of that pair are not published, 2.9.1 / 0.24.1 are.
ifeq ($(shell uname -m),aarch64)
TORCH_PAIR := torch==2.9.1 torchvision==0.24.1
else
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: demo test notebooks claims bench lint install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PAIR)
	$(BIN)/python -m pip install --quiet -e '.[test,bench,notebooks]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Trains the quickstart (ResNet-18 on the embedded MNIST digits), tests its best checkpoint, then says where they are
# and what to try next.
demo: $(STAMP)
	$(BIN)/lit-models fit --config configs/quickstart.yaml --trainer.enable_progress_bar false
	$(BIN)/lit-models test --config configs/quickstart.yaml --ckpt_path best --trainer.enable_progress_bar false
	@$(BIN)/python -m lit_models.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Executes every notebook in notebooks/ in a fresh kernel (outputs are not written back); fails on an error or on a
# notebook committed with outputs.
notebooks: $(STAMP)
	$(BIN)/python notebooks/run.py

# The lecture's claims, measured: one table (docs/benchmarks.md) and its plots (docs/claims_*.png).
claims: $(STAMP)
	$(BIN)/python benchmarks/claims.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/claims.py
	$(BIN)/python benchmarks/digits.py
	$(BIN)/python benchmarks/augmentation.py
	$(BIN)/python benchmarks/test_protocols.py
	$(BIN)/python benchmarks/data_speed.py
	$(BIN)/python benchmarks/shards.py --seeds 0 1 2
	$(BIN)/python benchmarks/modern_recipe.py
	$(BIN)/python benchmarks/checkpoint_load.py
	$(BIN)/python benchmarks/run_safety.py
	$(BIN)/python benchmarks/resumable_loader.py
	$(BIN)/python benchmarks/data_convert.py
	$(BIN)/python benchmarks/segmentation.py
	$(BIN)/python benchmarks/fcn_staged.py --seeds 0 1 --epochs 16 --fraction 0.5
	$(BIN)/python benchmarks/sequence.py
	# The proposal detectors' speed table times the Faster R-CNN and YOLO v1 checkpoints of detection.py beside them;
	# the evaluation protocols (VOC AP, error breakdown, flip and multi-scale tests, rescoring) test all five again.
	runs=$$(mktemp -d) && $(BIN)/python benchmarks/detection.py --keep $$runs && \
		$(BIN)/python benchmarks/proposal_detection.py --detection-runs $$runs --keep $$runs && \
		$(BIN)/python benchmarks/detection_ap.py --runs $$runs && \
		$(BIN)/python benchmarks/detection_errors.py --runs $$runs && \
		$(BIN)/python benchmarks/detection_test_protocols.py --runs $$runs
	$(BIN)/python benchmarks/faster_rcnn_training.py --seeds 0 1 2
