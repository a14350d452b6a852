# No imports of twisted_rfwd here: twistd scans this file at every start.
from twisted.application.service import ServiceMaker

rfwdServer = ServiceMaker(
    "rfwd-server",
    "twisted_rfwd.tap.server",
    "SSH server for remote port forwarding (the ssh -R server end)",
    "rfwd-server",
)
rfwdClient = ServiceMaker(
    "rfwd-client",
    "twisted_rfwd.tap.client",
    "SSH remote port forwarding client, like ssh -N -R",
    "rfwd-client",
)
