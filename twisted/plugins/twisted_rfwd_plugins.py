# No imports of twisted_rfwd here: twistd scans this file at every start.
from twisted.application.service import ServiceMaker


class _TunnelServiceMaker(ServiceMaker):
    """Installs rfwd's reactor (unless twistd's --reactor chose one) before the plugin loads."""

    @property
    def options(self):  # type: ignore[no-untyped-def]
        try:
            from twisted_rfwd.ssh.reactor import install_unless_chosen
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
