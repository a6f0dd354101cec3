"""python -m exporter: the same as the capability-exporter command."""

import sys

from exporter.command import main

sys.exit(main())
