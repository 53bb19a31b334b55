# Two commands: `make demo` and `make test`. Both install what is missing first:
# Debian packages, the virtual environment in .venv, and the project itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := pcsc,nfc,serial,camera,ui,central,dev
# pcscd + vsmartcard-vpcd: the real PC/SC stack with a virtual reader; libzbar0: QR decoding;
# fonts-nanum: Korean text on screen; postgresql: the central store's test server.
APT_PACKAGES := libpcsclite-dev libzbar0 pcscd vsmartcard-vpcd socat fonts-nanum postgresql python3-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test apt venv lint typecheck bench clean

demo: $(STAMP)
	$(BIN)/localpay demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

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

clean:
	rm -rf $(VENV) build *.egg-info
