"""
twisted-rfwd: SSH remote port forwarding (C{ssh -R}) on Twisted, both ends.

The embedding API, for programs that already run a reactor:

  - client side: L{connect} with a L{ClientConfig} gives a L{Tunnel}, and L{TunnelService}
    keeps one up (reconnecting) for as long as it runs;
  - server side: listen with a L{ForwardingServerFactory} built from a L{ServerConfig}.
"""

from twisted_rfwd._version import __version__
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
    "load_identity",
    "parse_remote_forward",
    "tune_allocator",
]
