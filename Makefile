# The two commands of the README: `sudo make demo` and `sudo make test`.
# Both run scripts/setup first (idempotent; seconds when nothing is missing).

SHELL := /bin/bash
VENV := .venv
# -rfEs: list failures, errors and skips at the end (a skip fails the suite: tests/conftest.py).
PYTEST_FLAGS ?= -q -rfEs -p no:cacheprovider

.PHONY: setup demo test clean lint

setup:
	scripts/setup

demo: setup
	$(VENV)/bin/v6nat demo

# pytest exits 5 when it collected no tests: that is a failure, said plainly.
test: setup
	@start=$$(date +%s); \
	$(VENV)/bin/pytest $(PYTEST_FLAGS); rc=$$?; \
	echo "make test: pytest exit status $$rc after $$(( $$(date +%s) - start )) s"; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; \
	exit $$rc

clean:
	@if [ -x $(VENV)/bin/v6nat ] && [ "$$(id -u)" -eq 0 ]; then $(VENV)/bin/v6nat lab cleanup; fi
	rm -rf $(VENV) v6nat_ebpf.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

lint: setup
	$(VENV)/bin/python -m compileall -q v6nat_ebpf tests
	bash -n scripts/setup .ci/run
