# Fleet Console: `make up` runs the console with its demo fleet; `make test` runs every test.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: install install-test up down status test bench clean

install:
	bash scripts/install.sh

install-test:
	bash scripts/install.sh --test

up: install
	bash scripts/up.sh

down:
	bash scripts/down.sh

status:
	bash scripts/up.sh --status

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(BENCH)

clean: down
	rm -rf .fleet test-artifacts
