# Two commands do everything on a fresh machine:
#   make demo   install, then fine-tune the bundled example end to end
#   make test   install, then lint and run the test suite
# GPU users: make install TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tuneforge-installed
PYTEST_ARGS ?=

.PHONY: install install-spark install-redis install-postgres install-chromium ui demo test test-fast lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, for this machine's hardware, so the project's loose pin never re-resolves it
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# optional: Java + PySpark for data.engine: spark (the spark tests skip without them)
install-spark: install
	VENV=$(VENV) scripts/install-spark.sh

# optional: redis-server for the response-cache tests (the redis tests skip without it)
install-redis:
	scripts/install-redis.sh

# optional: PostgreSQL for the fine-tuning service's shared-queue tests (they skip without it)
install-postgres:
	scripts/install-postgres.sh

# optional: Debian's chromium for the web UI's browser tests (they skip without it)
install-chromium:
	scripts/install-chromium.sh

# the web UI on http://127.0.0.1:7860 over ./runs (after `make demo`)
ui: install
	$(VENV)/bin/tuneforge ui

demo: install
	$(VENV)/bin/tuneforge run examples/quickstart.yaml

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf runs .pytest_cache .ruff_cache test-artifacts
