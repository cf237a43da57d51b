# Every target creates .venv when it is missing and installs what it needs.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Test processes: the suite mostly waits on worker processes and git, so two share 2 cores well.
TEST_JOBS ?= 2

.PHONY: demo test bench lint asyncapi clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found: install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ferry demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist worksteal

bench: $(STAMP)
	$(BIN)/python -m bench

# The AsyncAPI document of the workers (docs/asyncapi/), generated from their FastStream brokers.
asyncapi: $(STAMP)
	$(BIN)/ferry docs asyncapi --out docs/asyncapi

lint: $(STAMP)
	$(BIN)/ruff check shared services tests bench
	$(BIN)/ruff format --check shared services tests bench
	$(BIN)/mypy shared/ferry

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
