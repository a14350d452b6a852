"""
rfwd-client and rfwd-server with a host certificate, in memory: the client trusts only the CA
(an C{@cert-authority} line), over the default post-quantum key exchange.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from tests.support.keys import new_key, write_private_key
from tests.support.memory import MemoryRig
from twisted_rfwd.client.config import HostKeyPolicy
from twisted_rfwd.client.forwards import ForwardStatus
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.server.host_keys import load_host_certificate


def _keygen(*arguments: str) -> None:
    program = shutil.which("ssh-keygen")
    if program is None:
        raise SkipTest("ssh-keygen is not installed")
    subprocess.run([program, "-q", *arguments], check=True, capture_output=True, timeout=30)


class HostCertificateTests(TestCase):
    def test_client_trusting_only_the_ca_connects_over_mlkem(self) -> None:
        """
        The server offers its host certificate; the client, with StrictHostKeyChecking=yes and
        only an @cert-authority line for the host, accepts it, and the key exchange is
        mlkem768x25519-sha256.  With the CA line for another host, it refuses.
        """
        tmp = Path(self.mktemp())
        tmp.mkdir()
        host_key = new_key()
        key_path = write_private_key(host_key, tmp / "host_key")
        (tmp / "host_key.pub").write_bytes(host_key.public().toString("OPENSSH") + b"\n")
        ca = write_private_key(new_key(), tmp / "ca")
        _keygen("-y", "-f", str(ca))  # the CA file is usable by ssh-keygen
        _keygen("-s", str(ca), "-I", "server", "-h", "-n", "server.test", f"{key_path}.pub")
        certificate = load_host_certificate(str(tmp / "host_key-cert.pub"))
        ca_public = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(ca)], check=True, capture_output=True, text=True
        ).stdout.strip()
        for pattern, accepted in (("[server.test]:2222", True), ("[other.test]:2222", False)):
            rig = MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")])
            rig.factory.config.host_keys[:] = [host_key]
            rig.server_config.host_certificates.append(certificate)
            rig.factory = type(rig.factory)(rig.reactor, rig.server_config, rig.binder)
            rig.factory.doStart()
            known = tmp / f"known_hosts_{accepted}"
            known.write_text(f"@cert-authority {pattern} {ca_public}\n")
            rig.client_config.known_hosts = [str(known)]
            rig.client_config.strict_host_key_checking = HostKeyPolicy.YES
            rig.tunnel = type(rig.tunnel)(rig.reactor, rig.client_config)
            ready = rig.connect()
            if accepted:
                tunnel = self.successResultOf(ready)
                assert rig.client is not None
                self.assertEqual(rig.client.kexAlg, b"mlkem768x25519-sha256")
                self.assertEqual(rig.client.keyAlg, b"ssh-ed25519-cert-v01@openssh.com")
                self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)
            else:
                self.failureResultOf(ready)
