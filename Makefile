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

.PHONY: demo demo-compare test test-fast e2e lint format benchmarks clean image manifests

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The simulation pipeline on CLINC150 through kfp.local: embed (Beam), index, then rounds of
# label ingest, train, select and report, with an oracle labeler; prints each round's metrics and
# where its artifacts are. Re-running reuses the embeddings and index.
demo: $(STAMP)
	rm -rf $(DEMO_OUT)/kfp/campaigns $(DEMO_OUT)/kfp/pipeline-root
	$(BIN)/seals-al run-local --items $(DATA) --concept $(DEMO_CONCEPT) --strategy $(DEMO_STRATEGY) \
		--rounds 5 --batch-size 100 --out $(DEMO_OUT)/kfp

# SEALS vs global selection side by side, without KFP (seals-al simulate).
demo-compare: $(STAMP)
	$(BIN)/seals-al simulate --data $(DATA) --concept $(DEMO_CONCEPT) --strategy $(DEMO_STRATEGY) \
		--mode seals --rounds 9 --out $(DEMO_OUT)/seals
	$(BIN)/seals-al simulate --data $(DATA) --concept $(DEMO_CONCEPT) --strategy $(DEMO_STRATEGY) \
		--mode global --rounds 9 --out $(DEMO_OUT)/global
	$(BIN)/seals-al compare $(DEMO_OUT)/seals $(DEMO_OUT)/global --out $(DEMO_OUT)/seals-vs-global.png

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest

# The developer's loop: every test but those marked integration (kfp.local, Docker, Label Studio,
# the GCS emulator, Beam worker processes, the real model; tests/conftest.py marks them).
test-fast: lint
	$(BIN)/python -m pytest -m "not integration"

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/label_efficiency.py
	$(BIN)/python benchmarks/selection_cost.py
	$(BIN)/python benchmarks/embed_throughput.py
	$(BIN)/python benchmarks/kfp_overhead.py
	$(BIN)/python benchmarks/index_scale.py --workdir /tmp  # about 25 minutes, 25 GB of disk
	$(BIN)/python benchmarks/round_cost.py  # about an hour, 30 GB of disk in /tmp
	$(BIN)/python benchmarks/bad_inputs.py  # docs/RELIABILITY.md
	$(BIN)/python benchmarks/cluster_path.py  # after make image (or make e2e); uses round_cost's 1M data
	$(BIN)/python benchmarks/score_throughput.py  # 4M rows: 6 GB of disk and RAM
	$(BIN)/python benchmarks/growth_cost.py --workdir /tmp  # 1M rows: about 25 minutes, 10 GB of disk

clean:
	rm -rf $(VENV) $(DEMO_OUT) .cache .pytest_cache .ruff_cache

# The container image (needs Docker). Tag = package version. The build stage takes this machine's
# pip settings (images/pip-settings.sh: certificate bundle, CPU torch wheel); the image does not.
# BASE_IMAGE: any Debian-based Python 3.11 (make e2e builds one with debootstrap).
IMAGE = $(shell $(BIN)/python -c 'from seals_al.version import IMAGE; print(IMAGE)')
BASE_IMAGE ?= python:3.11-slim
# The build stage is tagged too ($(IMAGE)-build), so the dependency layers stay cached while the
# superseded images of this Dockerfile (label org.seals-al.image, no tag left) are removed: each
# rebuild would otherwise leave 2 GB behind. images/disk-check.sh stops early when Docker's disk is
# nearly full, saying so, instead of failing mid-build with "no space left on device".
image: $(STAMP)
	bash images/disk-check.sh
	torch_index=$$(PYTHON=$(BIN)/python images/pip-settings.sh) && \
	version=$$($(BIN)/python -c 'from seals_al.version import __version__; print(__version__)') && \
	for target in build final; do \
		docker build --network host -f images/Dockerfile \
			$$([ $$target = build ] && echo "--target build -t $(IMAGE)-build" || echo "-t $(IMAGE)") \
			--build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg TORCH_INDEX="$$torch_index" \
			--build-arg VERSION=$$version . || exit 1; \
	done
	docker image prune --force --filter label=org.seals-al.image=seals-al

# The cluster path, proven with containers: Docker (installed and started if missing, no bridge,
# host networking), a debootstrapped bookworm base, the image, a GCS emulator on 127.0.0.1, and
# every pipeline task in its own container through kfp.local's DockerRunner (e2e/run.py).
E2E_BASE := seals-al/bookworm-python:3.11
e2e: $(STAMP)
	BASE_IMAGE=$(E2E_BASE) bash e2e/docker-up.sh
	$(MAKE) --no-print-directory image BASE_IMAGE=$(E2E_BASE) > .e2e-image.log 2>&1 || (tail -30 .e2e-image.log; exit 1)
	$(BIN)/python e2e/run.py

# Regenerate what is generated from code: compiled pipelines, the Argo template, component READMEs.
manifests: $(STAMP)
	$(BIN)/seals-al compile
	$(BIN)/seals-al argo-template
	$(BIN)/python -m components.readme
