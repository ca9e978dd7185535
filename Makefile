# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench soak clean

$(BIN)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

demo: $(BIN)/.installed
	$(BIN)/taskcast demo

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: $(BIN)/.installed lint
	./scripts/test-deps
	$(BIN)/pytest -q

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/scale.py --shape tasks
	$(BIN)/python bench/publishers.py
	$(BIN)/python bench/storm.py

soak: $(BIN)/.installed
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .taskcast .pytest_cache .mypy_cache .ruff_cache
