"""
Certificates with real processes, keys and certificates made by C{ssh-keygen}: rfwd-client's
user certificate accepted by sshd's C{TrustedUserCAKeys}; host certificates both ways (sshd's
C{HostCertificate} checked by rfwd-client, rfwd-server's C{--host-certificate} checked by
C{ssh}); an expired host certificate and a C{@revoked} CA refused by rfwd-client as by ssh.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from tests.support.pairs import (
    Keys,
    make_keys,
    start_rfwd_client,
    start_rfwd_server,
    start_ssh,
    start_sshd,
)
from tests.support.processes import free_port, openssh_binary


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


def keygen(*args: str) -> None:
    subprocess.run([openssh_binary("ssh-keygen"), "-q", *args], check=True, capture_output=True)


def make_ca(keys: Keys) -> Path:
    """A CA key pair beside the test's keys; returns the private key's path."""
    ca = keys.workdir / "ca"
    keygen("-t", "ed25519", "-N", "", "-C", "test-ca", "-f", str(ca))
    return ca


def sign(ca: Path, key: Path, *args: str) -> Path:
    """C{ssh-keygen -s ca} over C{key}'s public half; returns C{key-cert.pub}."""
    public = key.with_name(key.name + ".pub")
    if not public.exists():
        public.write_text(
            subprocess.run(
                [openssh_binary("ssh-keygen"), "-y", "-f", str(key)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
    keygen("-s", str(ca), "-I", f"{key.name}-id", "-z", "42", *args, str(public))
    return key.with_name(key.name + "-cert.pub")


def ca_line(ca: Path, marker: str, port: int) -> str:
    return f"{marker} [127.0.0.1]:{port} {ca.with_name('ca.pub').read_text().strip()}\n"


class CertificateProcessTests(TestCase):
    timeout = 60

    async def test_user_certificate_to_sshd_trusting_only_the_ca(self) -> None:
        """
        rfwd-client picks up user_key-cert.pub beside -i user_key and logs in to an sshd that
        trusts only the CA (TrustedUserCAKeys, an empty authorized_keys).
        """
        keys = make_keys(Path(self.mktemp()))
        ca = make_ca(keys)
        sign(ca, keys.user_key, "-n", keys.user, "-V", "-5m:+1h")
        keys.authorized_keys.write_text("")
        ca_public = ca.with_name("ca.pub")
        _, port = await start_sshd(self, reactor(), keys, f"TrustedUserCAKeys {ca_public}\n")
        client = start_rfwd_client(self, reactor(), keys, port, ["0:127.0.0.1:9"])
        match = await client.wait_for(r"Authenticated as \S+ with (.*)")
        self.assertIn("-cert", match.group(1))
        self.assertIn('ID "user_key-id" serial 42', match.group(1))

    async def test_sshd_host_certificate_checked_by_rfwd_client(self) -> None:
        """
        sshd with HostCertificate; rfwd-client under StrictHostKeyChecking=yes, its known_hosts
        holding only a @cert-authority line, connects and says it accepted the certificate.
        """
        keys = make_keys(Path(self.mktemp()))
        ca = make_ca(keys)
        cert = sign(ca, keys.host_key, "-h", "-n", "127.0.0.1", "-V", "-5m:+1h")
        _, port = await start_sshd(self, reactor(), keys, f"HostCertificate {cert}\n")
        (keys.workdir / "known_hosts").write_text(ca_line(ca, "@cert-authority", port))
        client = start_rfwd_client(
            self, reactor(), keys, port, ["0:127.0.0.1:9"], host_key_checking="yes"
        )
        await client.wait_for(r"Host certificate of \[127\.0\.0\.1\]:\d+ accepted")
        await client.wait_for(r"Authenticated as")

    async def test_rfwd_server_host_certificate_checked_by_ssh(self) -> None:
        """
        rfwd-server --host-certificate; ssh under StrictHostKeyChecking=yes with only a
        @cert-authority line in its known_hosts connects and gets its forward.
        """
        keys = make_keys(Path(self.mktemp()))
        ca = make_ca(keys)
        cert = sign(ca, keys.host_key, "-h", "-n", "127.0.0.1", "-V", "-5m:+1h")
        _, port = await start_rfwd_server(self, reactor(), keys, "--host-certificate", str(cert))
        (keys.workdir / "known_hosts_ssh").write_text(ca_line(ca, "@cert-authority", port))
        ssh = start_ssh(
            self,
            reactor(),
            keys,
            port,
            [f"0:127.0.0.1:{free_port()}"],
            "-o",
            "StrictHostKeyChecking=yes",
            "-v",
        )
        await ssh.wait_for(r"Server host certificate: ssh-ed25519-cert-v01@openssh\.com")
        await ssh.wait_for(r"Allocated port \d+ for remote forward")

    async def _refusals(
        self, keys: Keys, ca: Path, cert: Path, marker_lines: str, reason: str
    ) -> None:
        """ssh and rfwd-client against the same sshd and known_hosts: both refuse alike."""
        _, port = await start_sshd(self, reactor(), keys, f"HostCertificate {cert}\n")
        known = ca_line(ca, "@cert-authority", port) + marker_lines.format(port=port)
        (keys.workdir / "known_hosts").write_text(known)
        (keys.workdir / "known_hosts_ssh").write_text(known)
        outcomes = {}
        client = start_rfwd_client(
            self, reactor(), keys, port, ["0:127.0.0.1:9"], host_key_checking="yes"
        )
        await client.wait_ended(30)
        outcomes["rfwd-client"] = (
            client.exit_code,
            client.find(r"verification failed") is not None,
        )
        ssh = start_ssh(
            self, reactor(), keys, port, ["0:127.0.0.1:9"], "-o", "StrictHostKeyChecking=yes"
        )
        await ssh.wait_ended(30)
        outcomes["ssh"] = (ssh.exit_code, ssh.find(r"verification failed") is not None)
        self.assertEqual(outcomes, {"rfwd-client": (255, True), "ssh": (255, True)})
        self.assertIsNotNone(client.find(reason), client.output())
        self.assertIsNone(client.find("Traceback"), client.output())

    async def test_expired_host_certificate_refused_as_by_ssh(self) -> None:
        """
        An expired host certificate (and no plain key known): ssh and rfwd-client both end
        with 255 and "Host key verification failed"; rfwd-client says the certificate expired.
        """
        keys = make_keys(Path(self.mktemp()))
        ca = make_ca(keys)
        cert = sign(ca, keys.host_key, "-h", "-n", "127.0.0.1", "-V", "20200101:20200102")
        await self._refusals(keys, ca, cert, "", r"Certificate invalid: expired")

    async def test_revoked_ca_refused_as_by_ssh(self) -> None:
        """
        A valid host certificate whose CA is also marked @revoked: refused by both with 255
        and "Host key verification failed".
        """
        keys = make_keys(Path(self.mktemp()))
        ca = make_ca(keys)
        cert = sign(ca, keys.host_key, "-h", "-n", "127.0.0.1", "-V", "-5m:+1h")
        revoked = ca_line(ca, "@revoked", 0).replace("]:0 ", "]:{port} ")
        await self._refusals(
            keys, ca, cert, revoked, r"the CA key \S+ presented .*is marked @revoked"
        )
