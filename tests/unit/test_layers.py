"""
The shape of the shared SSH layer (L{twisted_rfwd.ssh}): Conch's internals touched in one module,
transport and multiplexer joined by declared interfaces, CHANNEL_DATA framed in one place, and
errors reported by whose fault they are.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import twisted.conch.ssh.service
import twisted.conch.ssh.transport
from twisted.conch.ssh.transport import (
    DISCONNECT_BY_APPLICATION,
    DISCONNECT_PROTOCOL_ERROR,
    SSHServerTransport,
)
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from tests.support.processes import REPOSITORY
from tests.unit.test_mux import FakeSSHTransport
from twisted_rfwd.errors import RemoteProtocolError
from twisted_rfwd.protocol.wire import pack_string, pack_uint32
from twisted_rfwd.ssh import conch
from twisted_rfwd.ssh.interfaces import IChannelDataSink, IKeyExchangeObserver, ISSHTransport
from twisted_rfwd.ssh.mux import ChannelMux
from twisted_rfwd.ssh.transport import TransportMixin

PACKAGE = REPOSITORY / "twisted_rfwd"
CONCH_ADAPTER = PACKAGE / "ssh" / "conch.py"
# Every module of ours keeps its own Logger as C{_log}; Conch's classes happen to use the name too.
OUR_NAMES_TOO = {"_log"}


def _sources() -> dict[Path, str]:
    sources = {path: path.read_text(encoding="utf-8") for path in sorted(PACKAGE.rglob("*.py"))}
    # A wrong path would make every check below pass on nothing.
    assert PACKAGE / "ssh" / "transport.py" in sources, f"no sources under {PACKAGE}"
    return sources


def _conch_private_names(module_file: str) -> set[str]:
    """The underscore names a Conch module defines: methods, class constants, instance state."""
    tree = ast.parse(Path(module_file).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.Assign):
                    names.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _users(names: set[str]) -> dict[str, list[str]]:
    """Which of our modules, other than the Conch adapter, mention each of C{names}."""
    found: dict[str, list[str]] = {}
    for path, text in _sources().items():
        if path == CONCH_ADAPTER:
            continue
        for name in names:
            if re.search(rf"\b{re.escape(name)}\b", text):
                found.setdefault(name, []).append(str(path.relative_to(PACKAGE)))
    return found


class ConchInternalsTests(SynchronousTestCase):
    """Conch's private names are touched in L{twisted_rfwd.ssh.conch} only."""

    def test_listed_private_names_are_used_only_by_the_adapter(self) -> None:
        """No module but ssh/conch.py mentions a Conch private name it lists."""
        self.assertEqual(_users(set(conch.CONCH_PRIVATE_NAMES)), {})

    def test_the_list_names_conch_private_state(self) -> None:
        """Every name listed is one Conch's transport really defines privately."""
        defined = _conch_private_names(twisted.conch.ssh.transport.__file__)
        self.assertEqual(set(conch.CONCH_PRIVATE_NAMES) - defined, set())

    def test_no_other_private_name_of_the_transport_or_service_is_used(self) -> None:
        """
        No private name of Conch's C{SSHTransportBase} or C{SSHService} module appears outside
        the adapter, listed or not (a new use must go through ssh/conch.py).
        """
        defined = _conch_private_names(twisted.conch.ssh.transport.__file__)
        defined |= _conch_private_names(twisted.conch.ssh.service.__file__)
        self.assertEqual(_users(defined - OUR_NAMES_TOO), {})


class _Calls(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[str] = []

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in {"getattr", "hasattr"}:
            self.found.append(f"line {node.lineno}: {ast.unparse(node)}")
        self.generic_visit(node)


class DeclaredInterfaceTests(SynchronousTestCase):
    """Transport and multiplexer find each other through zope Interfaces, not by name."""

    def test_no_getattr_between_transport_and_mux(self) -> None:
        """The transport, the multiplexer and its parts look nothing up by name."""
        for name in ("transport", "mux", "global_requests", "backpressure", "channel"):
            path = PACKAGE / "ssh" / f"{name}.py"
            calls = _Calls()
            calls.visit(ast.parse(path.read_text(encoding="utf-8")))
            self.assertEqual(calls.found, [], path.name)

    def test_mux_provides_what_the_transport_needs(self) -> None:
        """The multiplexer declares the fast CHANNEL_DATA path and the key exchange events."""
        for interface in (IChannelDataSink, IKeyExchangeObserver, IPushProducer):
            self.assertTrue(verifyClass(interface, ChannelMux), interface)

    def test_transport_provides_what_the_mux_needs(self) -> None:
        """Our transport (on Conch's) declares, and has, what the multiplexer calls."""

        class Transport(TransportMixin, SSHServerTransport):
            pass

        self.assertTrue(verifyClass(ISSHTransport, Transport))

    def test_the_fake_transport_is_checked_too(self) -> None:
        """The multiplexer tests' recorder provides the same interface."""
        self.assertTrue(verifyObject(ISSHTransport, FakeSSHTransport()))


class FramingTests(SynchronousTestCase):
    """Binary framing lives in the protocol layer."""

    def test_ssh_layer_packs_no_structs(self) -> None:
        """No module of the SSH layer imports struct: CHANNEL_DATA is framed in wire.py."""
        for path in sorted((PACKAGE / "ssh").glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            imported = {
                alias.name
                for node in ast.walk(tree)
                if isinstance(node, ast.Import)
                for alias in node.names
            }
            imported |= {
                node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            }
            self.assertNotIn("struct", imported, path.name)


class _Transport(TransportMixin, SSHServerTransport):
    """Our transport on Conch's server side, with nothing else of the server's."""


class WhoseFaultTests(SynchronousTestCase):
    """The peer's protocol errors and our own bugs end a connection differently."""

    def connect(self, failure: Exception) -> StringTransport:
        transport = _Transport()
        tcp = StringTransport()
        transport.makeConnection(tcp)
        tcp.clear()

        def fail(data: bytes) -> bytes:
            raise failure

        transport._read_version = fail  # type: ignore[method-assign]
        transport.dataReceived(b"SSH-2.0-peer\r\n")
        return tcp

    def disconnect(self, code: int, text: bytes) -> bytes:
        return pack_uint32(code) + pack_string(text)

    def test_peer_error_is_a_protocol_error(self) -> None:
        """A RemoteProtocolError disconnects with PROTOCOL_ERROR and its reason, no traceback."""
        tcp = self.connect(RemoteProtocolError("the peer erred"))
        self.assertIn(self.disconnect(DISCONNECT_PROTOCOL_ERROR, b"the peer erred"), tcp.value())
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_our_bug_is_logged_and_not_blamed_on_the_peer(self) -> None:
        """Any other exception is logged with its traceback; the peer gets "internal error"."""
        tcp = self.connect(ZeroDivisionError("ours"))
        self.assertIn(self.disconnect(DISCONNECT_BY_APPLICATION, b"internal error"), tcp.value())
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(tcp.disconnecting)
