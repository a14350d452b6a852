"""
Run the benchmarks as a script (C{make bench}): C{python benchmarks/run.py --help}.
The same as C{python -m benchmarks} from the checkout; see L{benchmarks.cli}.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script: the checkout holding benchmarks/ and harness/ goes on the import path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
