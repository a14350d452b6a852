"""C{python -m benchmarks}: the benchmark command line of L{benchmarks.cli}."""

from __future__ import annotations

import sys

from benchmarks.cli import main

sys.exit(main(sys.argv[1:]))
