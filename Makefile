# The two commands: `make bench` and `make test`. Both run the idempotent `make setup` first.
VENV := .venv
PY := $(VENV)/bin/python
ISOBENCH := $(VENV)/bin/isobench
PYTEST := $(VENV)/bin/pytest

.PHONY: setup lint test unit integration bench report check clean

setup:
	@bash scripts/setup.sh

test: setup lint
	$(PYTEST) -q tests

lint: setup
	$(VENV)/bin/lint-imports

unit: setup
	$(PYTEST) -q tests/unit

integration: setup
	$(PYTEST) -q tests/integration tests/security

bench: setup
	$(ISOBENCH) bench --profile quick
	$(ISOBENCH) report

report: setup
	$(ISOBENCH) report

check: setup
	rm -rf results/check  # `bench --out` refuses a non-empty directory; each check is a fresh run
	$(ISOBENCH) bench --profile quick --values 3 --only startup,cpu,enforcement --out results/check
	$(ISOBENCH) check results/check

clean:
	rm -rf $(VENV) .pytest_cache
