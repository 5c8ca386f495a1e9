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

# The regression check CI runs: a small bench (the workloads results/bounds.toml bounds, 5 values as in
# the A/A runs results/calibration.toml was calibrated from) and `isobench check`.
CHECK_BENCH := --profile quick --values 5 --only enforcement --env container,runc
check: setup
	rm -rf results/check  # `bench --out` refuses a non-empty directory; each check is a fresh run
	$(ISOBENCH) bench $(CHECK_BENCH) --out results/check
	$(ISOBENCH) check results/check

clean:
	rm -rf $(VENV) .pytest_cache
