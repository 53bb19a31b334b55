# Two commands: `make demo` and `make test`. Both install what is missing first:
# Debian packages, the virtual environment in .venv, and the project itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := pcsc,nfc,serial,camera,ui,printer,central,dev
# pcscd + vsmartcard-vpcd: the real PC/SC stack with a virtual reader; libzbar0: QR decoding;
# fonts-nanum: Korean text on screen; postgresql: the central store's test server;
# gcc and python3-dev: pyscard has no Linux wheel and builds from source;
# chromium and chromium-driver: the operator's console is tested in a real headless browser;
# fuse3: the power-cut tests serve the ledger through a FUSE file system (mfusepy loads libfuse3).
APT_PACKAGES := gcc python3-dev python3-venv libpcsclite-dev libzbar0 pcscd vsmartcard-vpcd socat fonts-nanum postgresql chromium chromium-driver fuse3
# The suite waits on servers, subprocesses and sockets more than it computes: on two cores
# three workers finish it sooner than one (the PC/SC tests stay together on one of them).
TEST_WORKERS ?= 3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test apt venv lint bench fuzz mutation soak clean

demo: $(STAMP)
	$(BIN)/localpay demo

# ruff and mypy first: a change they reject never lands (the mutation run counts a mutant
# mypy rejects as caught). The reader tests run their own pcscd with virtual readers and
# restart it to prove recovery; only one pcscd can run on a machine, so a system one
# (socket-activated on Debian) is stopped for the run and started again afterwards.
test: $(STAMP)
	@stopped=""; \
	if command -v systemctl >/dev/null 2>&1; then \
	  for u in pcscd.socket pcscd.service; do \
	    if systemctl is-active --quiet $$u 2>/dev/null; then \
	      echo "stopping $$u for the test run"; $(SUDO) systemctl stop $$u && stopped="$$stopped $$u"; \
	    fi; \
	  done; \
	fi; \
	$(BIN)/ruff check . && $(BIN)/mypy && \
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --durations=15; rc=$$?; \
	for u in $$stopped; do echo "starting $$u again"; $(SUDO) systemctl start $$u; done; \
	exit $$rc

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(STAMP): setup.cfg pyproject.toml | apt
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/localpay bench

# Longer fuzzing than the suite's bounded runs: a minute per parser.
fuzz: $(STAMP)
	for h in tlv mpm cpm wallet pocket_rules; do $(BIN)/python tools/fuzz_$$h.py -max_total_time=60 || exit 1; done

# Power cuts through a FUSE file system (tests/powercut): 1,000 cuts of the real ledger, 40
# of first boots, the controls that must be caught (synchronous=NORMAL/OFF, no directory
# fsync), 100 cuts mid config install and 50 while the sync state is saved; then 1,000
# kill -9s of localpay run and central serve; then a simulated week of a city (50 validators,
# 20 tills, central on PostgreSQL, faults from a seed; report and plot in the folder it
# prints). Each prints its seed: SOAK_ARGS="--seed S" replays the cuts, KILLS_ARGS="--seed S"
# the kills, CITY_ARGS="--seed S" the week.
soak: $(STAMP)
	$(BIN)/python -m tests.soak_power_cuts $(SOAK_ARGS)
	$(BIN)/python -m tests.soak_kills $(KILLS_ARGS)
	$(BIN)/python -m tests.soak_city $(CITY_ARGS)

# Mutation testing of the money paths (mutation/areas.toml): slow, so not part of `make test`.
# Fails when a module's score falls below mutation/scores.toml; survivors in build/mutation/.
# MUTATION_ARGS passes options, e.g. make mutation MUTATION_ARGS="--area central-store".
mutation: $(STAMP) $(VENV)/.mutation-installed
	$(BIN)/python tools/mutation.py $(MUTATION_ARGS)

$(VENV)/.mutation-installed: setup.cfg | $(STAMP)
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS),mutation]'
	@touch $@

clean:
	rm -rf $(VENV) build *.egg-info
