# The two commands: `make up` and `make test`. Both install whatever is missing first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
KAIWA := $(VENV)/bin/kaiwa
export PIP_CACHE_DIR ?= $(HOME)/.cache/kaiwa/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: up test pytest test-models-isa check install lint typecheck clean

$(VENV)/.installed: pyproject.toml requirements.lock
	@echo "==> python: creating $(VENV) with the pinned dependencies (requirements.lock)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install --progress-bar on -r requirements.lock \
		|| { echo "error: pip install failed; check that PyPI is reachable"; exit 1; }
	@$(PY) -m pip install -q --no-deps -e .
	@touch $@

install: $(VENV)/.installed
	@$(KAIWA) install --profile test

up: $(VENV)/.installed
	@$(KAIWA) up

check: $(VENV)/.installed
	@echo "==> ruff"
	@$(VENV)/bin/ruff check core agents api kaiwa tests
	@$(VENV)/bin/ruff format --check core agents api kaiwa tests
	@echo "==> import rule: kaiwa over agents | api over core"
	@$(VENV)/bin/lint-imports --no-cache
	@echo "==> mypy --strict"
	@$(VENV)/bin/mypy

test: install check pytest

# The tests alone, once `install` and `check` have run (.ci/run times each phase apart).
pytest: $(VENV)/.installed
	@echo "==> pytest"
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

# The tests of what real models say, again under another instruction set than the machine's
# own (docs/model-content-tests.md): CTranslate2 (Whisper) reads CT2_FORCE_CPU_ISA. An
# AVX-512 machine then runs AVX2's kernels, an AVX2 one AVX's. (onnxruntime has no such
# switch; xllamacpp's wheel is one llama.cpp build, the same kernels on every machine.)
MODELS_ISA ?= $(shell grep -qw avx512f /proc/cpuinfo && echo AVX2 || echo AVX)
test-models-isa: install
	@echo "==> pytest -m 'models and not e2e' with CT2_FORCE_CPU_ISA=$(MODELS_ISA)"
	@CT2_FORCE_CPU_ISA=$(MODELS_ISA) $(VENV)/bin/pytest -m "models and not e2e" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .kaiwa web/node_modules web/dist
