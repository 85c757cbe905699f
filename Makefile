# The two commands of the README. Both set up .venv first when needed (idempotent).
.PHONY: demo test setup
PY := .venv/bin/python

setup:
	@scripts/setup_env.sh

demo: setup
	@$(PY) -m monother_ros.cli demo --out runs/demo

test: setup
	@scripts/run_tests.sh
