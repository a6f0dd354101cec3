"""The capability-exporter command: a subcommand's module, else the exporter itself."""

from __future__ import annotations

import importlib
import sys
from typing import Optional

# Imported only when named: run and trace never load the serving stack, which costs seconds
# where Python starts slowly (a guest under emulation, a small node).
SUBCOMMANDS = {"trace": "exporter.trace", "run": "exporter.advise.run", "recommend": "exporter.advise.recommend"}


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    from exporter import cli

    return cli.main(argv)
