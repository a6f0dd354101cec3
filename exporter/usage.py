"""One-line errors for bad input: argparse and fatal conditions exit without a traceback."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

PROG = "capability-exporter"
EXIT_FAILURE = 1
EXIT_USAGE = 2


def fail(message: str, code: int) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(code)


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (exit 2) instead of usage plus error."""

    usage_exit = EXIT_USAGE

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see --help)", self.usage_exit)
