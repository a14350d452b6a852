"""The SSH server end (HostB): listens for remote forwards and opens their channels."""

from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.factory import ForwardingServerFactory

__all__ = ["ForwardingServerFactory", "ServerConfig"]
