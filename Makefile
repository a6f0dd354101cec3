# make run: install what is missing, then start the exporter with config/default.yaml.
# make test: install what is missing, then run every test, real-kernel tests included (as root).
# make test-kernels: the same real-kernel suite per attach mode, here and on other kernels under QEMU.
# make bench-http: the HTTP endpoint's load figures (latency, throughput, RSS), as in docs/http.md.

PYTHON := /usr/bin/python3
VENV := .venv
# BCC's Python bindings come from Debian (the PyPI package named "bcc" is another project);
# the venv sees them through --system-site-packages. setcap (libcap2-bin), gcc and prometheus
# (a real server for the end-to-end test, and promtool for the alert rules) and bpftool (to
# cross-check exporter/btf.py) are for the tests.
APT_PACKAGES := python3-bpfcc python3-venv libcap2-bin gcc prometheus bpftool
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

# Kernels for make test-kernels, as /boot/vmlinuz-<release>; each comes from Debian's
# linux-image-<release> (or -unsigned) package. Add 6.12.107+deb12-amd64 for a third row.
KERNELS ?= 6.1.0-56-amd64
MATRIX_OUT ?= kernel-matrix
VNG_VENV := .vng
VNG_STAMP := $(VNG_VENV)/.installed
QEMU_PACKAGES := qemu-system-x86 busybox-static

.PHONY: run test test-unit test-kernel test-kernels bench-http kernel-images deps clean

run: $(STAMP)
	$(VENV)/bin/capability-exporter --config.file config/default.yaml

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(VENV)/bin/python -m pytest tests/unit $(PYTEST_ARGS)

test-kernel: $(STAMP)
	$(VENV)/bin/python -m pytest tests/kernel $(PYTEST_ARGS)

test-kernels: $(STAMP) $(VNG_STAMP) kernel-images
	$(VENV)/bin/python tests/kernel_matrix.py --vng $(VNG_VENV)/bin/vng --out $(MATRIX_OUT) \
	    --markdown $(MATRIX_OUT)/matrix.md $(KERNELS)

bench-http: $(STAMP)
	$(VENV)/bin/python tests/bench_http.py

deps: $(STAMP)

# virtme-ng boots a kernel on this machine's own root filesystem, read-only.
$(VNG_STAMP):
	$(PYTHON) -m venv $(VNG_VENV)
	$(VNG_VENV)/bin/pip install -q --disable-pip-version-check virtme-ng==1.42
	touch $@

kernel-images:
	@missing=""; for p in $(QEMU_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	for k in $(KERNELS); do [ -e /boot/vmlinuz-$$k ] || missing="$$missing linux-image-$$k"; done; \
	if [ -n "$$missing" ]; then \
	    apt-get update -qq; \
	    pkgs=""; for p in $$missing; do \
	        if apt-cache show $$p >/dev/null 2>&1; then pkgs="$$pkgs $$p"; else pkgs="$$pkgs $$p-unsigned"; fi; \
	    done; \
	    echo "installing from apt:$$pkgs"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs; \
	fi

$(STAMP): pyproject.toml Makefile
	@missing=""; for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing from apt:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) $(VNG_VENV) $(MATRIX_OUT) *.egg-info .pytest_cache
