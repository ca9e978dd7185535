# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

TS := clients/typescript
OUTSIDE := tests/outside

.PHONY: demo test lint bench soak clean

$(BIN)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	$(BIN)/python -m compileall -q src/taskcast  # bytecode now: a hook call must not compile
	touch $@

# The TypeScript SDK's dependencies, exactly as its package-lock.json pins them.
$(TS)/node_modules/.installed: $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Clients taskcast does not write, driven by the tests: the Claude Code CLI, AG-UI's client.
$(OUTSIDE)/node_modules/.installed: $(OUTSIDE)/package-lock.json
	cd $(OUTSIDE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: $(BIN)/.installed
	$(BIN)/taskcast demo

lint: $(BIN)/.installed $(TS)/node_modules/.installed
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	cd $(TS) && npm run --silent typecheck

test: $(BIN)/.installed lint $(OUTSIDE)/node_modules/.installed
	./scripts/test-deps
	$(BIN)/pytest -q
	cd $(TS) && TASKCAST_PYTHON=$(abspath $(BIN))/python npm test --silent
	cd $(OUTSIDE) && TASKCAST_PYTHON=$(abspath $(BIN))/python npm test --silent

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/cluster_log.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/scale.py --shape tasks
	$(BIN)/python bench/publishers.py
	$(BIN)/python bench/storm.py
	$(BIN)/python bench/clients.py
	$(BIN)/python bench/claude_code_hook.py

soak: $(BIN)/.installed
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .taskcast .pytest_cache .mypy_cache .ruff_cache $(TS)/node_modules $(TS)/build $(TS)/dist $(OUTSIDE)/node_modules
