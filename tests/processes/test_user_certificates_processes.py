"""
User certificates with real processes: OpenSSH's C{ssh} holding a user certificate made by
C{ssh-keygen -s} in the test logs in to rfwd-server through C{--trusted-user-ca-keys} and
through a C{cert-authority} line, and its forward works; a revoked key (a plain RevokedKeys
file and a KRL from C{ssh-keygen -k}) and an expired certificate are refused by rfwd-server as
by OpenSSH's sshd given the same files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from tests.support.apps import start_app_server, wait_until_echo
from tests.support.pairs import Keys, make_keys, start_rfwd_server, start_ssh, start_sshd
from tests.support.processes import free_port, openssh_binary


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


class UserCertificateProcessTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.keys: Keys = make_keys(Path(self.mktemp()))
        self.dir = self.keys.workdir
        self.keygen = openssh_binary("ssh-keygen")
        self.ca = self.dir / "ca"
        self.run_keygen("-t", "ed25519", "-N", "", "-C", "ca", "-f", str(self.ca))
        public = subprocess.run(
            [self.keygen, "-y", "-f", str(self.keys.user_key)],
            check=True,
            capture_output=True,
            timeout=30,
        ).stdout
        Path(f"{self.keys.user_key}.pub").write_bytes(public)
        # No plain key authorized: only the certificate can log in.
        self.keys.authorized_keys.write_text("")

    def run_keygen(self, *args: str) -> None:
        subprocess.run([self.keygen, "-q", *args], check=True, capture_output=True, timeout=30)

    def certify(self, *options: str) -> None:
        """Sign the user's key: user_key-cert.pub beside user_key, where ssh looks for it."""
        self.run_keygen(
            "-s",
            str(self.ca),
            "-I",
            "test-user",
            "-z",
            "77",
            "-n",
            self.keys.user,
            *options,
            f"{self.keys.user_key}.pub",
        )

    async def assert_forwards(self, port: int) -> None:
        """ssh logs in to C{port} with its certificate and the forward carries an echo."""
        _, app = await start_app_server(reactor())
        self.addCleanup(app.stopListening)
        listen = free_port()
        destination = app.getHost().port  # type: ignore[attr-defined]
        ssh = start_ssh(
            self, reactor(), self.keys, port, [f"127.0.0.1:{listen}:127.0.0.1:{destination}"]
        )
        await wait_until_echo(reactor(), listen)
        self.assertIsNone(ssh.find("Permission denied"), ssh.output())

    async def test_trusted_user_ca_keys(self) -> None:
        """ssh with a certificate logs in via --trusted-user-ca-keys; the log names it."""
        self.certify()
        server, port = await start_rfwd_server(
            self, reactor(), self.keys, "--trusted-user-ca-keys", f"{self.ca}.pub"
        )
        await self.assert_forwards(port)
        await server.wait_for(
            r"Accepted publickey for \S+ from .*: ssh-ed25519-cert-v01@openssh\.com SHA256:\S+ "
            r'ID "test-user" serial 77 CA ssh-ed25519 SHA256:\S+ via TrustedUserCAKeys'
        )

    async def test_cert_authority_line(self) -> None:
        """ssh with a certificate logs in via a cert-authority line in authorized_keys."""
        self.certify()
        line = f'cert-authority,principals="{self.keys.user}" ' + Path(f"{self.ca}.pub").read_text()
        self.keys.authorized_keys.write_text(line)
        server, port = await start_rfwd_server(self, reactor(), self.keys)
        await self.assert_forwards(port)
        await server.wait_for(r'Accepted publickey .* ID "test-user" serial 77 .* via \S+ line 1')

    async def outcomes(self, rfwd_options: list[str], sshd_lines: str) -> dict[str, Any]:
        """ssh's exit status and whether it was denied, against sshd and rfwd-server."""
        _, rfwd_port = await start_rfwd_server(self, reactor(), self.keys, *rfwd_options)
        _, sshd_port = await start_sshd(self, reactor(), self.keys, sshd_lines)
        found = {}
        for name, port in (("sshd", sshd_port), ("rfwd-server", rfwd_port)):
            ssh = start_ssh(
                self, reactor(), self.keys, port, [f"127.0.0.1:{free_port()}:127.0.0.1:9"]
            )
            await ssh.wait_ended(30)
            denied = ssh.find(r"Permission denied \(publickey") is not None
            found[name] = (ssh.exit_code, denied)
        return found

    async def assert_refused_like_sshd(self, revoked: Path | None) -> None:
        ca = f"{self.ca}.pub"
        rfwd = ["--trusted-user-ca-keys", ca]
        sshd = f"TrustedUserCAKeys {ca}\n"
        if revoked is not None:
            rfwd += ["--revoked-keys", str(revoked)]
            sshd += f"RevokedKeys {revoked}\n"
        found = await self.outcomes(rfwd, sshd)
        self.assertEqual(found, {"sshd": (255, True), "rfwd-server": (255, True)})

    async def test_revoked_key_in_plain_file(self) -> None:
        """A certificate whose key is listed in a plain RevokedKeys file: refused by both."""
        self.certify()
        revoked = self.dir / "revoked_keys"
        revoked.write_bytes(Path(f"{self.keys.user_key}.pub").read_bytes())
        await self.assert_refused_like_sshd(revoked)

    async def test_revoked_serial_in_krl(self) -> None:
        """A certificate whose serial a KRL (ssh-keygen -k) revokes: refused by both."""
        self.certify()
        spec = self.dir / "krl_spec"
        spec.write_text("serial: 70-80\n")
        krl = self.dir / "revoked.krl"
        self.run_keygen("-k", "-f", str(krl), "-s", f"{self.ca}.pub", str(spec))
        await self.assert_refused_like_sshd(krl)

    async def test_expired_certificate(self) -> None:
        """A certificate whose validity window has passed: refused by both."""
        self.certify("-V", "20200101:20200102")
        await self.assert_refused_like_sshd(None)
