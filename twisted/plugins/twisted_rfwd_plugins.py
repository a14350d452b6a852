# No imports of twisted_rfwd at the top: twistd scans this file at every start.
from typing import Any

from twisted.application.service import ServiceMaker


class _TunnelServiceMaker(ServiceMaker):
    """
    Installs rfwd's reactor (L{twisted_rfwd.ssh.reactor}) when the plugin is chosen, before its
    module loads, unless twistd's --reactor has installed one already.
    """

    @property
    def options(self) -> Any:
        try:
            # Here, not at the top: only when this plugin runs.
            from twisted_rfwd.ssh.reactor import install_unless_chosen  # noqa: PLC0415
        except ImportError:  # no epoll here: Twisted's default reactor
            pass
        else:
            install_unless_chosen()
        return super().options


rfwdServer = _TunnelServiceMaker(
    "rfwd-server",
    "twisted_rfwd.tap.server",
    "SSH server for remote port forwarding (the ssh -R server end)",
    "rfwd-server",
)
rfwdClient = _TunnelServiceMaker(
    "rfwd-client",
    "twisted_rfwd.tap.client",
    "SSH remote port forwarding client, like ssh -N -R",
    "rfwd-client",
)
