"""
twisted-rfwd: SSH remote port forwarding (C{ssh -R}) on Twisted, both ends.

The embedding API, for programs that already run a reactor:

  - client side: L{connect} with a L{ClientConfig} gives a L{Tunnel}, and L{TunnelService}
    keeps one up (reconnecting) for as long as it runs;
  - server side: listen with a L{ForwardingServerFactory} built from a L{ServerConfig}, whose
    C{host_keys} are private keys such as L{load_host_key} reads (L{load_identity} reads a
    client's key, for L{ClientConfig}).

The names below are imported on first use (PEP 562), so importing one layer, such as the
sans-IO L{twisted_rfwd.protocol}, does not import the others (or Twisted).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from twisted_rfwd._version import __version__

if TYPE_CHECKING:
    from twisted_rfwd.allocator import tune_allocator
    from twisted_rfwd.client.config import ClientConfig, HostKeyPolicy
    from twisted_rfwd.client.identity import Identity, load_identity
    from twisted_rfwd.client.service import TunnelService
    from twisted_rfwd.client.tunnel import ForwardState, ForwardStatus, Tunnel, connect
    from twisted_rfwd.errors import RfwdError
    from twisted_rfwd.protocol.policy import GatewayPorts, ListenPolicy
    from twisted_rfwd.protocol.spec import RemoteForward, parse_remote_forward
    from twisted_rfwd.server.config import ServerConfig
    from twisted_rfwd.server.factory import ForwardingServerFactory
    from twisted_rfwd.server.host_keys import load_host_key

# Each public name and the module it lives in.
_EXPORTS = {
    "tune_allocator": "twisted_rfwd.allocator",
    "ClientConfig": "twisted_rfwd.client.config",
    "HostKeyPolicy": "twisted_rfwd.client.config",
    "Identity": "twisted_rfwd.client.identity",
    "load_identity": "twisted_rfwd.client.identity",
    "TunnelService": "twisted_rfwd.client.service",
    "ForwardState": "twisted_rfwd.client.tunnel",
    "ForwardStatus": "twisted_rfwd.client.tunnel",
    "Tunnel": "twisted_rfwd.client.tunnel",
    "connect": "twisted_rfwd.client.tunnel",
    "RfwdError": "twisted_rfwd.errors",
    "GatewayPorts": "twisted_rfwd.protocol.policy",
    "ListenPolicy": "twisted_rfwd.protocol.policy",
    "RemoteForward": "twisted_rfwd.protocol.spec",
    "parse_remote_forward": "twisted_rfwd.protocol.spec",
    "ServerConfig": "twisted_rfwd.server.config",
    "ForwardingServerFactory": "twisted_rfwd.server.factory",
    "load_host_key": "twisted_rfwd.server.host_keys",
}

__all__ = [
    "ClientConfig",
    "ForwardState",
    "ForwardStatus",
    "ForwardingServerFactory",
    "GatewayPorts",
    "HostKeyPolicy",
    "Identity",
    "ListenPolicy",
    "RemoteForward",
    "RfwdError",
    "ServerConfig",
    "Tunnel",
    "TunnelService",
    "__version__",
    "connect",
    "load_host_key",
    "load_identity",
    "parse_remote_forward",
    "tune_allocator",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'twisted_rfwd' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
