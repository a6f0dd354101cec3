# make run: install what is missing, then start the exporter with config/default.yaml.
# make test: install what is missing, then run every test, real-kernel tests included (as root).
# make test-kernels: the same real-kernel suite per attach mode, here and on other kernels under QEMU.
# make test-container: the Dockerfile built with podman and run as the README says, with exact counts.
# make bench-http: the HTTP endpoint's load figures (latency, throughput, RSS), as in docs/http.md.

PYTHON := /usr/bin/python3
VENV := .venv
# BCC's Python bindings come from Debian (the PyPI package named "bcc" is another project);
# the venv sees them through --system-site-packages. make run installs only these and the
# package's own dependencies.
APT_PACKAGES := python3-bpfcc python3-venv
STAMP := $(VENV)/.installed
# For the tests only (make test and the other test targets): setcap (libcap2-bin), gcc and
# prometheus (a real server for the end-to-end test, and promtool for the alert rules) and
# bpftool (to cross-check exporter/ebpf/btf.py), the package's [test] extras, and the schemas of
# the prometheus-operator resources (npm, into tests/schemas/node_modules).
# iputils-ping, procps, systemd and util-linux: real programs that run --verify is tested on.
TEST_APT_PACKAGES := libcap2-bin gcc prometheus bpftool iputils-ping procps systemd util-linux
TEST_STAMP := $(VENV)/.installed-test
PYTEST_ARGS ?=

# Kernels for make test-kernels: a release in /boot (vmlinuz-<release>), or a release or
# series (5.10, 6.12, 7.2) that make kernel-images fetches from Debian into .kernels/.
# All four take two and a half hours or more on 2 CPUs with PORTABILITY="5.10 6.12";
# .ci/run picks its own (docs/kernel-matrix.md).
KERNELS ?= 6.1 5.10 6.12 7.2
# Of KERNELS, those that run only the portability subset (PORTABILITY in tests/kernel_matrix.py).
PORTABILITY ?=
MATRIX_OUT ?= kernel-matrix
VNG_VENV := .vng
VNG_STAMP := $(VNG_VENV)/.installed
# kmod: depmod for the fetched modules, and modprobe in the guests that load them.
QEMU_PACKAGES := qemu-system-x86 busybox-static kmod

.PHONY: run test test-unit test-kernel test-kernels bench-http kernel-images deps clean test-container container-tools

run: $(STAMP)
	$(VENV)/bin/capability-exporter --config.file config/default.yaml

# The podman tests (tests/kernel/test_podman.py) run a real container: container-tools first.
test: $(TEST_STAMP) container-tools
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-unit: $(TEST_STAMP)
	$(VENV)/bin/python -m pytest tests/unit $(PYTEST_ARGS)

test-kernel: $(TEST_STAMP) container-tools
	$(VENV)/bin/python -m pytest tests/kernel $(PYTEST_ARGS)

test-kernels: $(TEST_STAMP) $(VNG_STAMP) kernel-images
	$(VENV)/bin/python tests/kernel_matrix.py --vng $(VNG_VENV)/bin/vng --out $(MATRIX_OUT) \
	    --markdown $(MATRIX_OUT)/matrix.md --portability "$(PORTABILITY)" $(KERNELS)

bench-http: $(TEST_STAMP)
	$(VENV)/bin/python tests/bench_http.py

deps: $(TEST_STAMP)

# make bench: what the exporter costs, as one table (docs/performance.md); as root. It needs
# gcc (the test packages) and installs Debian's bpftrace, to compare with.
# BENCH_ARGS=--smoke: a quick run with small numbers.
BENCH_ARGS ?=
.PHONY: bench
bench: $(TEST_STAMP)
	@$(call apt_install_missing,bpftrace)
	$(VENV)/bin/python bench/bench.py $(BENCH_ARGS)

# make bench-kernels: the same bench in fexit and kprobe mode, in a guest of each of KERNELS.
.PHONY: bench-kernels
bench-kernels: $(TEST_STAMP) $(VNG_STAMP) kernel-images
	@$(call apt_install_missing,bpftrace)
	for k in $(KERNELS); do $(VENV)/bin/python bench/bench.py --guest $$k --vng $(VNG_VENV)/bin/vng $(BENCH_ARGS); done

# virtme-ng boots a kernel on this machine's own root filesystem, read-only.
$(VNG_STAMP):
	$(PYTHON) -m venv $(VNG_VENV)
	$(VNG_VENV)/bin/pip install -q --disable-pip-version-check virtme-ng==1.42
	touch $@

# Kernels not in /boot come from their Debian suite through a private apt configuration,
# unpacked into .kernels/ (tests/kernel_images.py); nothing is installed into the host.
kernel-images:
	@$(call apt_install_missing,$(QEMU_PACKAGES))
	$(PYTHON) tests/kernel_images.py $(KERNELS)

# Installs the Debian packages of $(1) that are missing.
apt_install_missing = missing=""; for p in $(1); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing from apt:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# compat: the checkout on sys.path by a plain .pth line, not an import hook that every
# Python start runs (0.6 s each under the kernel matrix's emulation).
EDITABLE := --config-settings editable_mode=compat

$(STAMP): pyproject.toml Makefile
	@$(call apt_install_missing,$(APT_PACKAGES))
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check $(EDITABLE) -e .
	touch $@

# Its own stamp, so that make test after make run still installs the test extras.
$(TEST_STAMP): $(STAMP) tests/schemas/package.json
	@$(call apt_install_missing,$(TEST_APT_PACKAGES))
	$(VENV)/bin/pip install -q --disable-pip-version-check $(EDITABLE) -e '.[test]'
	npm install --prefix tests/schemas --no-audit --no-fund --no-package-lock --loglevel=error
	touch $@

# --- make test-container: the image built and run for real (tests/container_e2e.py) ---
# podman builds the Dockerfile unchanged on a debian:bookworm-slim stand-in that mmdebstrap
# makes from Debian's packages; runc, since crun refuses hybrid cgroup hosts. One run at a
# time: the test's podman store is its own, but port and workload checks share the host.
# busybox-static: the root filesystem of the podman tests' image.
CONTAINER_PACKAGES := podman runc mmdebstrap busybox-static

container-tools:
	@$(call apt_install_missing,$(CONTAINER_PACKAGES))

test-container: $(TEST_STAMP) container-tools
	flock /tmp/capability-exporter-container.lock $(VENV)/bin/python tests/container_e2e.py

clean:
	rm -rf $(VENV) $(VNG_VENV) $(MATRIX_OUT) .kernels *.egg-info .pytest_cache tests/schemas/node_modules
