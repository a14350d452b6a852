# No imports of twisted_rfwd here: twistd and serverFromString scan this file at every start.
from typing import Any

from twisted.internet.interfaces import IStreamServerEndpoint, IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class RfwdServerParser:
    """C{rfwd:...}: listen on HostB through an SSH server (L{twisted_rfwd.client.endpoint})."""

    prefix = "rfwd"

    def parseStreamServer(
        self, reactor: Any, *args: object, **kwargs: object
    ) -> IStreamServerEndpoint:
        # Imported only when an rfwd: string is parsed, never at plugin scan.
        from twisted_rfwd.client.endpoint import parse_rfwd_endpoint  # noqa: PLC0415

        return parse_rfwd_endpoint(
            reactor, *(str(a) for a in args), **{k: str(v) for k, v in kwargs.items()}
        )


rfwdEndpoint = RfwdServerParser()
