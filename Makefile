# `make demo` and `make test` work on a fresh machine with only Python 3.11: both create .venv
# if it is missing and install the pinned requirements first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export SEALS_CACHE_DIR ?= $(CURDIR)/.cache
DATA := data/clinc150/clinc150.csv
DEMO_CONCEPT ?= report_fraud
DEMO_STRATEGY ?= mlp
DEMO_OUT := demo-output

.PHONY: demo test lint format benchmarks clean image manifests

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/seals-al simulate --data $(DATA) --concept $(DEMO_CONCEPT) --strategy $(DEMO_STRATEGY) \
		--mode seals --rounds 9 --out $(DEMO_OUT)/seals
	$(BIN)/seals-al simulate --data $(DATA) --concept $(DEMO_CONCEPT) --strategy $(DEMO_STRATEGY) \
		--mode global --rounds 9 --out $(DEMO_OUT)/global
	$(BIN)/seals-al compare $(DEMO_OUT)/seals $(DEMO_OUT)/global --out $(DEMO_OUT)/seals-vs-global.png
	@echo "Summaries: $(DEMO_OUT)/seals/summary.json $(DEMO_OUT)/global/summary.json"
	@echo "Per-round selections: $(DEMO_OUT)/seals/rounds/NNN/selected.jsonl"
	@echo "Side-by-side plot: $(DEMO_OUT)/seals-vs-global.png"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/label_efficiency.py
	$(BIN)/python benchmarks/selection_cost.py
	$(BIN)/python benchmarks/embed_throughput.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .cache .pytest_cache .ruff_cache

# The container image (needs Docker; not available on the build machine). Tag = package version.
IMAGE = $(shell $(BIN)/python -c 'from seals_al.version import IMAGE; print(IMAGE)')
image: $(STAMP)
	docker build -f images/Dockerfile -t $(IMAGE) \
		--build-arg VERSION=$$($(BIN)/python -c 'from seals_al.version import __version__; print(__version__)') .

# Regenerate what is generated from code: compiled pipelines and the Argo template.
manifests: $(STAMP)
	$(BIN)/seals-al compile
	$(BIN)/seals-al argo-template
