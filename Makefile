# The two commands of the README, and a few helpers. Each target sets up what it needs first.
#   make run    set up (venv, Docker engine, sandbox image, embedded model), run one tiny
#               self-improvement round on the embedded model, show it
#   make test   set up what the tests need, run the whole test suite
SHELL := /bin/bash
VENV ?= .venv
STOP := $(VENV)/bin/stop
PYTEST_ARGS ?=

.PHONY: help run test setup setup-test doctor lint

help:
	@sed -n '2,4p' Makefile | sed 's/^# *//'
	@echo "  make setup | setup-test | doctor | lint"

run: setup
	$(STOP) run --profile tiny
	$(STOP) show latest

test:
	@bash scripts/test.sh $(PYTEST_ARGS)

setup:
	@bash scripts/setup.sh --for run

setup-test:
	@bash scripts/setup.sh --for test

doctor:
	@$(STOP) doctor

lint:
	$(VENV)/bin/ruff check .
