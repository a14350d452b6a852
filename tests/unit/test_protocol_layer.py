"""
The sans-IO protocol layer stands alone: every module of L{twisted_rfwd.protocol} imports in a
Python where Twisted and zope cannot be imported at all, and importing the package
C{twisted_rfwd} itself imports none of its layers.
"""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import TestCase

from tests.support.processes import REPOSITORY

_WITHOUT_TWISTED = """
import importlib, pkgutil, sys

class NoTwisted:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("twisted", "zope"):
            raise ImportError(f"{name} is unavailable here")
        return None

sys.meta_path.insert(0, NoTwisted())
import twisted_rfwd.protocol as protocol
names = [m.name for m in pkgutil.iter_modules(protocol.__path__)]
for name in names:
    importlib.import_module(f"twisted_rfwd.protocol.{name}")
print(len(names), "modules:", " ".join(sorted(names)))
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class ProtocolLayerTests(TestCase):
    def test_protocol_layer_imports_without_twisted(self) -> None:
        """Each protocol module imports with Twisted and zope unavailable."""
        result = _run(_WITHOUT_TWISTED)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("wire", result.stdout)
        self.assertIn("phases", result.stdout)

    def test_package_import_is_lazy(self) -> None:
        """C{import twisted_rfwd} loads no layer; a public name loads only what it needs."""
        result = _run(
            "import sys, twisted_rfwd\n"
            "print(sorted(m for m in sys.modules if m.startswith(('twisted.', 'twisted_rfwd.'))))\n"
            "from twisted_rfwd import parse_remote_forward\n"
            "print('twisted.conch' in sys.modules, 'twisted_rfwd.server' in sys.modules)\n"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        first, second = result.stdout.splitlines()
        self.assertEqual(first, "['twisted_rfwd._version']")
        self.assertEqual(second, "False False")
