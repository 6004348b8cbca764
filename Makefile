# Two commands do all set-up on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
VENV ?= .venv
PYTHON ?= python3
# The newest torch that installs on the project's machines (a CUDA build that also runs on CPU); elsewhere pick the
# build for your hardware, e.g. `make demo TORCH_SPEC=torch==2.13.0` for 2.13's smaller CPU wheel.
TORCH_SPEC ?= torch==2.14.1
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,plots]"
	touch $@

# The oldest transformers we support (pyproject's lower bound), in a second environment, with the older torch.
LOWER_VENV ?= .venv-lower
LOWER_TRANSFORMERS ?= transformers==5.17.0
LOWER_TORCH_SPEC ?= torch==2.13.0
$(LOWER_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LOWER_VENV)
	$(LOWER_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOWER_VENV)/bin/python -m pip install -q "$(LOWER_TORCH_SPEC)"
	$(LOWER_VENV)/bin/python -m pip install -q -e ".[test,plots]" "$(LOWER_TRANSFORMERS)"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/rnn-lm demo

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-lower: $(LOWER_VENV)/.installed
	HF_HUB_OFFLINE=1 $(LOWER_VENV)/bin/python -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: install demo test test-lower lint
