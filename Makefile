# make run: install what is missing, then start the exporter with config/default.yaml.
# make test: install what is missing, then run every test, real-kernel tests included (as root).

PYTHON := /usr/bin/python3
VENV := .venv
# BCC's Python bindings come from Debian (the PyPI package named "bcc" is another project);
# the venv sees them through --system-site-packages.
APT_PACKAGES := python3-bpfcc python3-venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test test-unit test-kernel deps clean

run: $(STAMP)
	$(VENV)/bin/capability-exporter --config.file config/default.yaml

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(VENV)/bin/python -m pytest tests/unit $(PYTEST_ARGS)

test-kernel: $(STAMP)
	$(VENV)/bin/python -m pytest tests/kernel $(PYTEST_ARGS)

deps: $(STAMP)

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
	rm -rf $(VENV) *.egg-info .pytest_cache
