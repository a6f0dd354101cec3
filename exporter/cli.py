"""Command-line flags and the exporter's lifecycle: load, attach, drop privileges, serve, detach."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from typing import Optional

from prometheus_client import CollectorRegistry

from . import __version__, config, kernel, loader, privileges, progstats, server, webconfig
from .usage import EXIT_FAILURE, EXIT_USAGE, PROG, Parser, fail
from .cgroups import CgroupNames
from .collector import CapabilityCollector, ProbeInfo, UnusedSettings
from .maps import BpfMap, LayoutError, open_maps
from .probes import LoadError

log = logging.getLogger("exporter")

DEFAULT_LISTEN = ":9661"
DEFAULT_CONFIG = "config/default.yaml"
LOG_LEVELS = ("debug", "info", "warn", "error")
SUBCOMMANDS = {"trace": "exporter.trace", "run": "exporter.run"}


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Prometheus exporter for Linux capability checks and denials, counted in the kernel with eBPF. "
        "Subcommands: 'capability-exporter trace --help' for the live view; "
        "'capability-exporter run --help' to find the capabilities one command needs.",
    )
    p.add_argument("--web.listen-address", dest="listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to serve metrics on (default {DEFAULT_LISTEN})")
    p.add_argument("--web.config.file", dest="web_config", metavar="FILE",
                   help="TLS and basic auth, in Prometheus exporter-toolkit's web config format")
    p.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics", metavar="PATH",
                   help="path under which to serve metrics (default /metrics)")
    p.add_argument("--config.file", dest="config_file", default=DEFAULT_CONFIG, metavar="FILE",
                   help=f"YAML config file (default {DEFAULT_CONFIG})")
    p.add_argument("--config.check", dest="config_check", action="store_true",
                   help="validate the config, compile and attach the probe, report the attach mode, and exit")
    p.add_argument("--probe.mode", dest="mode", choices=config.MODES, metavar="MODE",
                   help="attach mode: auto, fexit, kprobe or tracepoint (overrides probe.mode in the config)")
    p.add_argument("--bpf.stats", dest="bpf_stats", action="store_true",
                   help="turn on kernel BPF run statistics while running (overrides probe.bpf_stats)")
    p.add_argument("--log.level", dest="log_level", choices=LOG_LEVELS, default="info", metavar="LEVEL",
                   help="debug, info, warn or error (default info)")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


class _LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        level = {"WARNING": "warn"}.get(record.levelname, record.levelname.lower())
        message = record.getMessage().replace('"', '\\"')
        return f'ts={ts} level={level} source={record.name} msg="{message}"'


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": logging.WARNING}.get(level, level.upper()))


def _load_config(args: argparse.Namespace) -> config.Config:
    if not args.telemetry_path.startswith("/"):
        fail(f"--web.telemetry-path must start with '/' (got {args.telemetry_path!r})", EXIT_USAGE)
    try:
        cfg = config.load(args.config_file)
    except config.ConfigError as err:
        fail(f"invalid config {err}", EXIT_USAGE)
    if args.mode:
        cfg = config.with_probe(cfg, mode=args.mode)
    if args.bpf_stats:
        cfg = config.with_probe(cfg, bpf_stats=True)
    return cfg


def _attach(cfg: config.Config) -> tuple[loader.Attachment, dict[str, BpfMap]]:
    try:
        kernel.ensure_tracefs()
        attachment = loader.load(cfg)
    except LoadError as err:
        fail(str(err), EXIT_FAILURE)
    except OSError as err:
        fail(err.strerror or str(err), EXIT_FAILURE)
    for mode, why in attachment.reasons.items():
        log.info("attach mode %s not used: %s", mode, why)
    try:
        maps = open_maps(attachment.maps)
    except (LayoutError, OSError) as err:
        attachment.close()
        fail(str(err), EXIT_FAILURE)
    return attachment, maps


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    args = parser().parse_args(argv)
    _setup_logging(args.log_level)
    cfg = _load_config(args)
    if args.config_check:
        _web(args, None)  # a bad web config fails the check too
        return _check(cfg)
    return _serve(args, cfg)


def _check(cfg: config.Config) -> int:
    attachment, _ = _attach(cfg)
    others = "; ".join(f"{m}: {why}" for m, why in attachment.reasons.items())
    print(f"config ok; attach mode {attachment.mode}" + (f" (not used: {others})" if others else ""))
    attachment.close()
    return 0


def _web(args: argparse.Namespace, application):
    """The application behind basic auth, and the TLS context, from --web.config.file."""
    if not args.web_config:
        return application, None
    try:
        web = webconfig.load(args.web_config)
        tls = webconfig.ssl_context(web.tls_server_config, args.web_config)
    except config.ConfigError as err:
        fail(f"invalid web config {err}", EXIT_USAGE)
    if web.basic_auth_users:
        application = webconfig.BasicAuth(application, web.basic_auth_users)
    return application, tls


def _serve(args: argparse.Namespace, cfg: config.Config) -> int:
    registry = CollectorRegistry(auto_describe=False)
    mode = {"name": "starting"}
    collector: list[CapabilityCollector] = []  # filled once attached; /profiles is empty before

    def profiles() -> dict[str, dict]:
        return collector[0].profiles() if collector else {}

    application, tls = _web(args, server.app(registry, args.telemetry_path, lambda: mode["name"], profiles))
    try:
        httpd = server.bind(args.listen, application, tls)
    except server.ListenError as err:
        fail(str(err), EXIT_USAGE)
    stats_fd = progstats.enable() if cfg.probe.bpf_stats else None
    attachment, maps = _attach(cfg)
    mode["name"] = attachment.mode
    log.info("attached to cap_capable in %s mode", attachment.mode)
    _drop_privileges()
    collector.append(
        CapabilityCollector(
            maps, attachment.programs,
            ProbeInfo.of(attachment.mode, cfg.probe.count_noaudit),
            cfg.labels, config.comm_filter(cfg.filters), CgroupNames(_cgroup_root(cfg.labels)),
            # A BPF_ENABLE_STATS fd turns stats on without showing in the sysctl.
            stats_enabled=lambda: stats_fd is not None or progstats.enabled(),
            unused=UnusedSettings.of(cfg, cfg.labels.cgroup_v1_controller),
        )
    )
    registry.register(collector[0])
    # Block the stop signals in every thread and wait for them here: a signal the kernel
    # delivers to the HTTP thread would otherwise never wake the main thread.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    thread = threading.Thread(target=httpd.serve_forever, name="http", daemon=True)
    thread.start()
    log.info("serving metrics on %s%s", args.listen, args.telemetry_path)
    received = signal.sigwait(stop_signals)
    log.info("received %s; detaching from cap_capable", signal.Signals(received).name)
    httpd.shutdown()
    httpd.server_close()
    attachment.close()
    progstats.disable(stats_fd)
    return 0


def _cgroup_root(labels: config.LabelsConfig) -> Optional[str]:
    """The cgroup tree whose ids the checks map holds: one v1 controller's, or v2."""
    if labels.cgroup_v1_controller:
        return kernel.cgroup_v1_mount(labels.cgroup_v1_controller)
    return kernel.cgroup2_mount()


def _drop_privileges() -> None:
    keep = privileges.needed_to_read_maps()
    try:
        result = privileges.drop_all(keep)
    except privileges.PrivilegeError as err:
        fail(f"cannot drop capabilities: {err}", EXIT_FAILURE)
    log.info(
        "dropped capabilities; kept %s; bounding set %s",
        ", ".join(result.kept) or "none",
        "emptied" if result.bounding_dropped else "unchanged",
    )
