# capability-exporter: counts Linux capability checks with eBPF (BCC).
#   docker build -t capability-exporter .
# It needs the node's kernel and a few capabilities: see deploy/kubernetes/daemonset.yaml.
#
# Two stages: the first installs the package into a venv with pip; the second is what
# runs, and holds only Debian's BCC (most of the image: LLVM and clang, which BCC links
# to compile the BPF programs at start-up) and that venv. pip, setuptools, python3-venv
# and the sources stay in the first stage.

FROM debian:bookworm-slim AS build
# Versions are not pinned: bookworm replaces them with security updates, and a pin
# to a superseded version would stop the image from building.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /usr/src/capability-exporter
COPY pyproject.toml README.md ./
COPY exporter/ exporter/
COPY bpf/ bpf/
# --system-site-packages: the venv must see Debian's BCC (installed in the final stage,
# at the same path). A plain (non-editable) install puts bpf/ inside the package, so
# the venv needs no sources; pip and setuptools are not used at run time.
RUN python3 -m venv --system-site-packages /opt/capability-exporter \
    && /opt/capability-exporter/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/capability-exporter/bin/pip uninstall -y --disable-pip-version-check setuptools pip

FROM debian:bookworm-slim
# BCC's Python bindings come from Debian (the PyPI package "bcc" is another project).
# No kernel headers: the exporter compiles against its own shim headers (bpf/shim).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-bpfcc \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/capability-exporter /opt/capability-exporter
COPY config/default.yaml /etc/capability-exporter/config.yaml

# The root filesystem may be read-only (as in the DaemonSet): write no .pyc files.
ENV PATH="/opt/capability-exporter/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1
EXPOSE 9661
# Runs as root (the image's default user): loading BPF programs needs it; the
# exporter drops its capabilities itself once attached.
ENTRYPOINT ["capability-exporter"]
CMD ["--config.file", "/etc/capability-exporter/config.yaml"]
