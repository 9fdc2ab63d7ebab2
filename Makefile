# The README's two commands: `make demo` and `make test`. Both create .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MUJOCO_GL ?= egl

.PHONY: demo test lint clean

$(BIN)/kinodiff: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the CPU wheel on disk; otherwise stable-baselines3 pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/kinodiff

demo: $(BIN)/kinodiff
	$(BIN)/kinodiff quickstart

test: $(BIN)/kinodiff
	$(BIN)/python -m pytest -q

lint: $(BIN)/kinodiff
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs
