# mbrl_ros developer entry points. `make demo` and `make test` set everything up by themselves.
SHELL := /bin/bash
ENV := . scripts/env.sh &&
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup demo test lint bench freeze clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(ENV) python -m mbrl_ros.demo $(DEMO_ARGS)

test: setup
	@$(ENV) python -m pytest $(PYTEST_ARGS)

lint: setup
	@$(ENV) python -m flake8 mbrl_ros test bench

# Planner side by side (mbrl_ros, pytorch_mppi, mbrl-lib); mbrl-lib lives in its own venv.
bench: setup
	@bash bench/peers_venv.sh || echo "bench: no mbrl-lib venv; running without mbrl-lib"
	@$(ENV) python -m bench.planner_peers $(BENCH_ARGS)

freeze:
	@(echo "# Pinned versions of everything in the venv (regenerate: make freeze)."; \
	  echo "setuptools<80"; \
	  .venv/bin/pip freeze --exclude-editable | grep -v "^setuptools=") > requirements/constraints.txt

clean:
	rm -rf .build results
