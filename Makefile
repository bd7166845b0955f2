# mbrl_ros developer entry points. `make demo` and `make test` set everything up by themselves.
SHELL := /bin/bash
# ROS 2 distribution: kilted (the default) or jazzy (`make test ROS_DISTRO=jazzy`: .venv-jazzy and
# .build-jazzy). Only the command line (or MBRL_ROS_DISTRO) chooses it, not a ROS_DISTRO left in
# the environment by a sourced ROS installation.
ifeq ($(origin ROS_DISTRO),command line)
export MBRL_ROS_DISTRO := $(ROS_DISTRO)
else
export MBRL_ROS_DISTRO := $(or $(MBRL_ROS_DISTRO),kilted)
endif
SUFFIX := $(if $(filter kilted,$(MBRL_ROS_DISTRO)),,-$(MBRL_ROS_DISTRO))
ENV := . scripts/env.sh &&
# On Jazzy `make test` runs the tests that touch ROS (nodes, graph, launch, messages, colcon
# build); the rest are ROS-free and the same under both (PYTEST_ARGS=test runs them all).
PYTEST_ARGS ?= $(if $(SUFFIX),$(JAZZY_TESTS))
JAZZY_TESTS := test/nodes test/integration test/launch_runner test/test_messages.py \
	test/test_colcon_build.py test/training/test_config_file.py test/data/test_bag_writer.py \
	test/demo/test_supervisor.py
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
ifeq ($(SUFFIX),)
	@(echo "# Pinned versions of everything in the venv (regenerate: make freeze)."; \
	  echo "setuptools<80"; \
	  .venv/bin/pip freeze --exclude-editable | grep -v "^setuptools=") > requirements/constraints.txt
else
	@(head -n 2 requirements/constraints$(SUFFIX).txt; \
	  .venv$(SUFFIX)/bin/pip freeze --exclude-editable | grep "^ros-") \
	  > requirements/constraints$(SUFFIX).txt.new
	@mv requirements/constraints$(SUFFIX).txt.new requirements/constraints$(SUFFIX).txt
endif

clean:
	rm -rf .build$(SUFFIX) results
