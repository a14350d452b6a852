"""
A C{cert-authority} line in authorized_keys, with real processes: OpenSSH's C{ssh} holding the
CA key itself (a plain key, no certificate) is refused by rfwd-server exactly as by sshd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from tests.support.pairs import make_keys, start_rfwd_server, start_ssh, start_sshd
from tests.support.processes import free_port


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


class CertAuthorityLineTests(TestCase):
    timeout = 60

    async def test_plain_key_on_cert_authority_line_refused_as_by_sshd(self) -> None:
        """
        ssh logging in with the very key a cert-authority line names gets "Permission denied"
        from sshd and from rfwd-server alike, and rfwd-server says why in its log.
        """
        keys = make_keys(Path(self.mktemp()))
        keys.authorized_keys.write_bytes(b"cert-authority " + keys.authorized_keys.read_bytes())
        rfwd, rfwd_port = await start_rfwd_server(self, reactor(), keys)
        _, sshd_port = await start_sshd(self, reactor(), keys)
        outcomes = {}
        for name, port in (("sshd", sshd_port), ("rfwd-server", rfwd_port)):
            ssh = start_ssh(self, reactor(), keys, port, [f"127.0.0.1:{free_port()}:127.0.0.1:9"])
            await ssh.wait_ended(20)
            refused = ssh.find(r"Permission denied \(publickey\)") is not None
            outcomes[name] = (ssh.exit_code, refused)
        self.assertEqual(outcomes, {"sshd": (255, True), "rfwd-server": (255, True)})
        await rfwd.wait_for(
            r"Refused publickey for \S+ from .*: key is not in the user's authorized keys"
        )
        self.assertIsNone(rfwd.find(r"Accepted|Authenticated|Traceback"), rfwd.output())
