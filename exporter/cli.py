"""Command-line flags and the exporter's lifecycle: load, attach, drop privileges, serve, detach."""

from __future__ import annotations

import argparse
import logging
import re
import ssl
import signal
import sys
import threading
from typing import Optional

from prometheus_client import CollectorRegistry

from exporter import __version__, config
from exporter.core import privileges
from exporter.core.cgroups import CgroupNames
from exporter.ebpf import kernel, loader, progstats
from exporter.ebpf.maps import BpfMap, LayoutError, open_maps
from exporter.ebpf.probes import LoadError
from exporter.serve import httpd, malloc, server, webconfig
from exporter.serve.collector import CapabilityCollector, ProbeInfo, UnusedSettings
from exporter.usage import EXIT_FAILURE, EXIT_USAGE, PROG, Parser, fail

log = logging.getLogger("exporter")

DEFAULT_LISTEN = ":9661"
DEFAULT_CONFIG = "config/default.yaml"
LOG_LEVELS = ("debug", "info", "warn", "error")


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Prometheus exporter for Linux capability checks and denials, counted in the kernel with eBPF. "
        "Subcommands: 'capability-exporter trace --help' for the live view; "
        "'capability-exporter run --help' to find the capabilities one command needs; "
        "'capability-exporter recommend --help' for what a workload needs across every node, from Prometheus.",
    )
    p.add_argument("--web.listen-address", dest="listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to serve metrics on (default {DEFAULT_LISTEN})")
    p.add_argument("--web.config.file", dest="web_config", metavar="FILE",
                   help="TLS and basic auth, in Prometheus exporter-toolkit's web config format")
    p.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics", metavar="PATH",
                   help="path under which to serve metrics (default /metrics)")
    limits = httpd.Limits()
    p.add_argument("--web.max-connections", dest="max_connections", type=_count(1, 1 << 20),
                   default=limits.max_connections, metavar="N",
                   help="open connections held at most; past it the longest idle is closed "
                        f"(default {limits.max_connections})")
    p.add_argument("--web.max-workers", dest="workers", type=_count(1, 1024), default=limits.workers, metavar="N",
                   help=f"threads answering requests (default {limits.workers})")
    p.add_argument("--web.read-header-timeout", dest="header_timeout", type=_duration, metavar="DURATION",
                   default=limits.header_timeout,
                   help=f"time a client has to send a request's headers (default {limits.header_timeout:g}s)")
    p.add_argument("--web.idle-timeout", dest="idle_timeout", type=_duration, metavar="DURATION",
                   default=limits.idle_timeout,
                   help=f"time a connection may wait idle (default {limits.idle_timeout:g}s)")
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


def _count(low: int, high: int):
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high} (got {text!r})")
        return int(text)

    return parse


def _duration(text: str) -> float:
    """A Prometheus-style duration: 500ms, 10s, 2m, 1h."""
    match = re.fullmatch(r"(\d{1,6})(ms|s|m|h)", text)
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"must be a duration above zero such as 500ms, 10s or 2m (got {text!r})")
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2]]


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
    """The config file with the flags over it; every flag is checked here, for --config.check too."""
    if not args.telemetry_path.startswith("/"):
        fail(f"--web.telemetry-path must start with '/' (got {args.telemetry_path!r})", EXIT_USAGE)
    try:
        server.check_address(args.listen)
    except server.ListenError as err:
        fail(str(err), EXIT_USAGE)
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
    """The exporter: serve, or --config.check (exporter.command hands subcommands elsewhere)."""
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.log_level)
    cfg = _load_config(args)
    if args.config_check:
        _web(args)  # a bad web config fails the check too
        return _check(cfg)
    return _serve(args, cfg)


def _check(cfg: config.Config) -> int:
    attachment, _ = _attach(cfg)
    others = "; ".join(f"{m}: {why}" for m, why in attachment.reasons.items())
    print(f"config ok; attach mode {attachment.mode}" + (f" (not used: {others})" if others else ""))
    attachment.close()
    return 0


def _web(args: argparse.Namespace) -> tuple[webconfig.WebConfig, Optional[ssl.SSLContext]]:
    """The web config from --web.config.file and its TLS context (None without TLS)."""
    if not args.web_config:
        return webconfig.WebConfig(), None
    try:
        web = webconfig.load(args.web_config)
        return web, webconfig.ssl_context(web.tls_server_config, args.web_config)
    except config.ConfigError as err:
        fail(f"invalid web config {err}", EXIT_USAGE)


def _limits(args: argparse.Namespace) -> httpd.Limits:
    """The server's bounds from the flags, within the open-file limit."""
    wanted = httpd.Limits(max_connections=args.max_connections, workers=args.workers,
                          header_timeout=args.header_timeout, idle_timeout=args.idle_timeout)
    try:
        return httpd.within_open_files(wanted)
    except httpd.TooFewFiles as err:
        fail(str(err), EXIT_FAILURE)


def _serve(args: argparse.Namespace, cfg: config.Config) -> int:
    malloc.one_arena()  # first: the threads started below must not get arenas of their own
    registry = CollectorRegistry(auto_describe=False)
    mode = {"name": "starting"}
    collector: list[CapabilityCollector] = []  # filled once attached; /profiles is empty before

    def profiles(comm: Optional[str]) -> tuple[dict[str, dict], int]:
        return collector[0].profiles(cfg.unused.max_comms, comm) if collector else ({}, 0)

    # Until the signal is waited for below, a SIGHUP must not end the process (its default).
    signal.signal(signal.SIGHUP, lambda *_: log.info("received SIGHUP while starting; the web config is being read"))
    web, tls = _web(args)
    auth = webconfig.BasicAuth(server.app(registry, args.telemetry_path, lambda: mode["name"], profiles,
                                          cfg.unused.max_comms), web.basic_auth_users)
    limits = _limits(args)
    try:
        host, port = server.check_address(args.listen)
        sock = httpd.listening_socket(host, port)  # before any BPF work, so that a busy port fails first
    except server.ListenError as err:
        fail(str(err), EXIT_USAGE)
    except OSError as err:
        fail(f"cannot listen on {args.listen}: {err.strerror}", EXIT_USAGE)
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
    # Block the signals in every thread and wait for them here: a signal the kernel
    # delivers to an HTTP thread would otherwise never wake the main thread.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals | {signal.SIGHUP})
    http = httpd.Server(sock, server.hardened(auth), limits, tls)
    http.prepare()
    thread = threading.Thread(target=http.serve, name="http", daemon=True)
    thread.start()
    log.info("serving metrics on %s%s%s (at most %d connections, %d workers)", "https://" if tls else "",
             args.listen, args.telemetry_path, limits.max_connections, limits.workers)
    while (received := signal.sigwait(stop_signals | {signal.SIGHUP})) == signal.SIGHUP:
        _reload(args, http, auth)
    log.info("received %s; detaching from cap_capable", signal.Signals(received).name)
    http.stop()
    attachment.close()
    progstats.disable(stats_fd)
    return 0


def _reload(args: argparse.Namespace, http: httpd.Server, auth: webconfig.BasicAuth) -> None:
    """SIGHUP: the web config again (rotated certificates, changed users) for new connections."""
    if not args.web_config:
        log.info("received SIGHUP; no --web.config.file to re-read, nothing changed")
        return
    try:
        web = webconfig.load(args.web_config)
        tls = webconfig.ssl_context(web.tls_server_config, args.web_config)
    except config.ConfigError as err:
        log.error("received SIGHUP; kept the web config in use, the file is invalid: %s", err)
        return
    http.set_tls(tls)
    auth.set_users(web.basic_auth_users)
    log.info("received SIGHUP; re-read %s: TLS %s, %d basic auth users", args.web_config,
             "on" if tls else "off", len(web.basic_auth_users))


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
