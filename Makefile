# mbrl_ros developer entry points. `make demo` and `make test` set everything up by themselves.
SHELL := /bin/bash
ENV := . scripts/env.sh &&
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench freeze clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(ENV) python -m mbrl_ros.demo $(DEMO_ARGS)

test: setup
	@$(ENV) python -m pytest $(PYTEST_ARGS)

lint: setup
	@$(ENV) python -m flake8 mbrl_ros test bench

bench: setup
	@$(ENV) python -m bench.planner_latency

freeze:
	@(echo "# Pinned versions of everything in the venv (regenerate: make freeze)."; \
	  echo "setuptools<80"; \
	  .venv/bin/pip freeze --exclude-editable | grep -v "^setuptools=") > requirements/constraints.txt

clean:
	rm -rf .build results
