# The two commands of the README: `sudo make demo` and `sudo make test`.
# Both run scripts/setup first (idempotent; seconds when nothing is missing).

SHELL := /bin/bash
VENV := .venv
# -rfEs: list failures, errors and skips at the end (a skip fails the suite: tests/conftest.py);
# a module that fails to import is an error, but the rest of the suite still runs.
PYTEST_FLAGS ?= -q -rfEs -p no:cacheprovider --continue-on-collection-errors

.PHONY: setup demo test clean lint bench bench-flood bench-footprint fuzz vagrant-box vagrant-test install uninstall image

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

# Benchmarks (bench/run.py): JSON in bench/results/, then docs/benchmarks.md and
# docs/img/bench-*.png. About 20-30 min; BENCH_ARGS=--quick for a few minutes.
BENCH_ARGS ?=
bench: setup
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

# The flood figure (bench/flood.py): new connections and established flows (idle and busy)
# through v6nat during a spoofed SYN flood of >= 3x its conntrack capacity (16384); a table on
# stdout, JSON in bench/results/flood-*.json. About 1 min; FLOOD_ARGS e.g. "--flood-pps 0" or --quick.
FLOOD_ARGS ?=
bench-flood: setup
	$(VENV)/bin/python -m bench.flood $(FLOOD_ARGS)

# The footprint figures (bench/footprint.py, issue 15): daemon RSS with 5,000 and 8,000 mappings
# published by Docker, ready after a first start and after restarts over the pins, `v6nat flows`
# over 50,000 flows. About 5 min; JSON in bench/results/footprint-*.json.
FOOTPRINT_ARGS ?=
bench-footprint: setup
	$(VENV)/bin/python -m bench.footprint $(FOOTPRINT_ARGS)

# The system install (docs/install.md): a venv in /opt/v6nat with the system's bcc,
# /usr/local/bin/v6nat, the unit, /etc/default/v6nat (never overwritten). ENABLE=1 enables and
# (re)starts the unit; PUBLIC_IFACE=IFACE fills in a new /etc/default/v6nat. No `setup`: it
# needs none of the test tools.
ENABLE ?= 0
PUBLIC_IFACE ?=
install:
	ENABLE=$(ENABLE) PUBLIC_IFACE=$(PUBLIC_IFACE) scripts/install

uninstall:
	scripts/install --uninstall

# The container image (Dockerfile) built offline: a Debian 12 root file system from Debian's packages
# (mmdebstrap), the venv with v6nat's wheel, `docker import`ed as v6nat:<version> and v6nat:latest into
# $DOCKER_HOST's dockerd (none answering: the tar and the import command are printed). Cached by its
# inputs under /var/cache/v6nat-vagrant/image; about 1-2 min cold with Debian's .debs cached, seconds warm.
image:
	scripts/image

# The datapath fuzzer (tests/fuzz/): FUZZ_PACKETS generated and mutated packets through every
# TC program with BPF_PROG_TEST_RUN, judged by a model of what may be translated; one worker
# per core, each in its own network namespace and pin path. Prints the figures; exits 1 on
# any violation or error.
# FUZZ_ARGS e.g. "--rules strict --seed 7 --json fuzz.json".
# About 1-2 min for 1,000,000 packets on 2 cores. The short run is part of `make test`.
FUZZ_PACKETS ?= 1000000
FUZZ_ARGS ?=
fuzz: setup
	$(VENV)/bin/python -m tests.fuzz.run --packets $(FUZZ_PACKETS) $(FUZZ_ARGS)

# The Vagrant lab, booted offline (docs/vagrant.md): the box from Debian's packages
# (cached), then two VMs under a libvirtd in its own network namespace, provisioned,
# checked end to end and destroyed. About 13 min of QEMU software emulation (box cached).
vagrant-box:
	scripts/vagrant-box

vagrant-test:
	scripts/vagrant-test

clean:
	@if [ -x $(VENV)/bin/v6nat ] && [ "$$(id -u)" -eq 0 ]; then $(VENV)/bin/v6nat lab cleanup; fi
	rm -rf $(VENV) v6nat_ebpf.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

lint: setup
	$(VENV)/bin/python -m compileall -q v6nat_ebpf tests
	bash -n scripts/setup scripts/install scripts/image scripts/vagrant-common.sh .ci/run
