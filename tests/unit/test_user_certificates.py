"""
User certificates on rfwd-server (L{twisted_rfwd.server.certificates} and the publickey checker
in L{twisted_rfwd.server.auth}), each of sshd's checks, with keys and certificates made by
OpenSSH's C{ssh-keygen} in the test and an injected clock.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import Key
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, TestCase

from twisted_rfwd.protocol.authorized_keys import parse_principals_lines
from twisted_rfwd.protocol.certificates import (
    USER_CERTIFICATE_ALGORITHMS,
    Certificate,
    parse_certificate,
)
from twisted_rfwd.server.certificates import CertificateRefused, check_user_certificate
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.publickey import (
    AuthorizedKeysChecker,
    AuthorizedKeysFiles,
    LoginIdentity,
    PeerSSHPrivateKey,
)

# 2030-01-01, inside the certificates' default window (forever) and the explicit ones below.
NOW = 1893456000.0


def _blob(line: str) -> bytes:
    return base64.b64decode(line.split()[1])


class CertificateCase(TestCase):
    """A CA, user keys and certificates made by ssh-keygen; the files sshd would read."""

    def setUp(self) -> None:
        if shutil.which("ssh-keygen") is None:
            raise SkipTest("ssh-keygen (openssh-client) is not installed")
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir()
        self.ca = self.key("ca")
        self.trusted = self.dir / "trusted_ca"
        self.trusted.write_text(self.public(self.ca))
        self.authorized = self.dir / "authorized_keys"
        self.authorized.write_text("")
        self.warnings: list[str] = []
        self.count = 0

    def keygen(self, *args: str) -> None:
        subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True, timeout=30)

    def key(self, name: str, kind: str = "ed25519") -> Path:
        path = self.dir / name
        self.keygen("-t", kind, "-N", "", "-C", name, "-f", str(path))
        return path

    def public(self, key: Path) -> str:
        return Path(f"{key}.pub").read_text()

    def certify(
        self, *options: str, principals: str | None = "alice", ca: Path | None = None
    ) -> tuple[Path, Certificate]:
        """A fresh user key and its certificate (C{options}: more ssh-keygen arguments)."""
        self.count += 1
        key = self.key(f"user{self.count}")
        names = ["-n", principals] if principals is not None else []
        self.keygen(
            "-s",
            str(ca or self.ca),
            "-I",
            f"cert{self.count}",
            "-z",
            str(self.count),
            *names,
            *options,
            f"{key}.pub",
        )
        return key, parse_certificate(_blob(Path(f"{key}-cert.pub").read_text()))

    def check(
        self,
        certificate: Certificate,
        user: str = "alice",
        peer: str = "127.0.0.1",
        now: float = NOW,
        trusted: bool = True,
        principals_file: str | None = None,
        revoked: str | None = None,
    ) -> Any:
        files = AuthorizedKeysFiles(str(self.authorized), home_of=lambda _: str(self.dir))
        return check_user_certificate(
            certificate,
            user,
            peer,
            now,
            trusted_user_ca_keys=str(self.trusted) if trusted else None,
            principals_file=principals_file,
            revoked_keys=revoked,
            authorized=lambda: files.keys_for(user),
            home_of=files.home_of,
            warn=self.warnings.append,
        )

    def assert_refused(self, reason: str, certificate: Certificate, **kwargs: Any) -> None:
        with self.assertRaises(CertificateRefused) as raised:
            self.check(certificate, **kwargs)
        self.assertIn(reason, str(raised.exception))


class TrustedUserCAKeysTests(CertificateCase):
    def test_accepted_for_a_principal(self) -> None:
        """A certificate from a trusted CA naming the user logs in, with forwarding."""
        key, cert = self.certify()
        login = self.check(cert)
        self.assertEqual(login.key.blob(), _blob(self.public(key)))
        self.assertEqual(login.ca.blob(), _blob(self.public(self.ca)))
        self.assertTrue(login.options.port_forwarding)
        self.assertEqual(login.trusted_by, f"TrustedUserCAKeys {self.trusted}")

    def test_user_not_a_principal(self) -> None:
        """The user name must be one of the certificate's principals."""
        _, cert = self.certify(principals="bob,carol")
        self.assert_refused("name is not a listed principal", cert)

    def test_no_principals_refused(self) -> None:
        """A certificate without principals is refused under TrustedUserCAKeys, as by sshd."""
        _, cert = self.certify(principals=None)
        self.assert_refused("certificate lacks principal list", cert)

    def test_ca_not_trusted(self) -> None:
        """A certificate signed by another CA is refused; so is any when no CA is configured."""
        other = self.key("other")
        _, cert = self.certify(ca=other)
        self.assert_refused("CA is not trusted", cert)
        _, mine = self.certify()
        self.assert_refused("CA is not trusted", mine, trusted=False)

    def test_host_certificate_refused(self) -> None:
        """A host certificate (-h) is not a user certificate."""
        _, cert = self.certify("-h")
        self.assert_refused("not a user certificate", cert)

    def test_validity_window(self) -> None:
        """Before valid_after: not yet valid; at valid_before and after: expired."""
        _, cert = self.certify("-V", "20290101:20300101")
        self.assert_refused("not yet valid", cert, now=cert.valid_after - 1)
        self.check(cert, now=cert.valid_after)
        self.assert_refused("expired", cert, now=cert.valid_before)

    def test_source_address(self) -> None:
        """The source-address critical option is enforced against the client's address."""
        _, cert = self.certify("-O", "source-address=10.0.0.0/8,192.0.2.1")
        self.check(cert, peer="10.1.2.3")
        self.check(cert, peer="::ffff:192.0.2.1")
        self.assert_refused("source-address does not allow 127.0.0.1", cert)

    def test_unknown_critical_option_refused(self) -> None:
        """A critical option sshd does not know refuses the certificate."""
        _, cert = self.certify("-O", "critical:made-up@example.com=x")
        self.assert_refused('critical option "made-up@example.com" is not supported', cert)

    def test_force_command_accepted(self) -> None:
        """force-command is accepted: rfwd runs no commands, so there is nothing to force."""
        _, cert = self.certify("-O", "force-command=/bin/true")
        self.assertTrue(self.check(cert).options.port_forwarding)

    def test_forwarding_needs_permit_port_forwarding(self) -> None:
        """Without the permit-port-forwarding extension, the login may not forward."""
        _, cert = self.certify("-O", "no-port-forwarding")
        self.assertFalse(self.check(cert).options.port_forwarding)
        _, clear = self.certify("-O", "clear")
        self.assertFalse(self.check(clear).options.port_forwarding)

    def test_tampered_certificate(self) -> None:
        """A certificate whose signed part was changed does not verify."""
        _, cert = self.certify()
        forged = Certificate(**{**cert.__dict__, "signed_data": cert.signed_data[:-1] + b"\x01"})
        self.assert_refused("signature does not verify", forged)

    def test_revoked_ca(self) -> None:
        """A CA key listed in RevokedKeys is refused even though it is trusted."""
        _, cert = self.certify()
        revoked = self.dir / "revoked"
        revoked.write_text(self.public(self.ca))
        self.assert_refused("CA key is revoked", cert, revoked=str(revoked))

    def test_unreadable_revoked_keys_refuses(self) -> None:
        """A RevokedKeys file that cannot be read refuses every key, as in sshd."""
        _, cert = self.certify()
        self.assert_refused("cannot read RevokedKeys", cert, revoked=str(self.dir / "missing"))


class AuthorizedPrincipalsFileTests(CertificateCase):
    def test_listed_principal(self) -> None:
        """With a principals file (%u), a certificate principal listed there logs in."""
        (self.dir / "principals.alice").write_text("# ops\nsomeone\nops-team\n")
        _, cert = self.certify(principals="ops-team")
        login = self.check(cert, principals_file="%h/principals.%u")
        self.assertTrue(login.options.port_forwarding)

    def test_user_name_alone_not_enough(self) -> None:
        """With a principals file, the user's own name must be listed there too."""
        (self.dir / "principals.alice").write_text("ops-team\n")
        _, cert = self.certify(principals="alice")
        self.assert_refused(
            "does not contain an authorized principal", cert, principals_file="principals.%u"
        )

    def test_missing_file_refuses(self) -> None:
        """A principals file that does not exist authorizes no principal."""
        _, cert = self.certify()
        self.assert_refused(
            "does not contain an authorized principal", cert, principals_file="%h/none"
        )

    def test_line_options_apply(self) -> None:
        """Options on the principal's line apply: from= and no-port-forwarding."""
        (self.dir / "principals").write_text('from="10.0.0.0/8",no-port-forwarding ops\n')
        _, cert = self.certify(principals="ops")
        self.assertFalse(
            self.check(cert, peer="10.0.0.1", principals_file="principals").options.port_forwarding
        )
        self.assert_refused("does not allow 127.0.0.1", cert, principals_file="principals")

    def test_parse_lines(self) -> None:
        """Principal lines: comments skipped, options before the last space, bad ones warned."""
        lines, warnings = parse_principals_lines(
            b"# c\nalice\nrestrict bob\nbogus-option carol\n", "P"
        )
        self.assertEqual(
            [(p.name, p.options.port_forwarding) for p in lines], [("alice", True), ("bob", False)]
        )
        self.assertEqual(warnings, ["P line 4: unsupported option 'bogus-option'"])


class CertAuthorityLineTests(CertificateCase):
    def line(self, options: str = "") -> None:
        prefix = f"cert-authority{',' + options if options else ''} "
        self.authorized.write_text(prefix + self.public(self.ca))

    def test_user_name_as_principal(self) -> None:
        """A cert-authority line accepts its CA's certificate naming the user."""
        self.line()
        _, cert = self.certify()
        login = self.check(cert, trusted=False)
        self.assertEqual(login.trusted_by, f"{self.authorized} line 1")
        _, other = self.certify(principals="bob")
        self.assert_refused("name is not a listed principal", other, trusted=False)

    def test_principals_option(self) -> None:
        """principals= replaces the user name: one of the listed names must be certified."""
        self.line('principals="ops,admins"')
        _, cert = self.certify(principals="bob,admins")
        self.check(cert, trusted=False)
        _, other = self.certify(principals="alice")
        self.assert_refused("does not contain an authorized principal", other, trusted=False)

    def test_no_principals_good_for_anyone(self) -> None:
        """A certificate without principals is accepted by a cert-authority line, as by sshd."""
        self.line()
        _, cert = self.certify(principals=None)
        self.check(cert, user="anyone", trusted=False)

    def test_line_options_merged(self) -> None:
        """The line's restrict and from= apply on top of the certificate's own."""
        self.line('restrict,from="127.0.0.1"')
        _, cert = self.certify()
        self.assertFalse(self.check(cert, trusted=False).options.port_forwarding)
        self.assert_refused("does not allow 10.0.0.1", cert, trusted=False, peer="10.0.0.1")

    def test_plain_ca_key_does_not_log_in(self) -> None:
        """The CA key itself, offered as a plain key, matches no line."""
        self.line()
        files = AuthorizedKeysFiles(str(self.authorized))
        (entry,) = files.keys_for("alice")
        self.assertFalse(entry.matches(_blob(self.public(self.ca))))
        self.assertTrue(entry.signs(_blob(self.public(self.ca))))


class CheckerTests(CertificateCase):
    """The publickey checker with certificate credentials, signed as a client signs."""

    def checker(self, **settings: Any) -> tuple[AuthorizedKeysChecker, ServerConfig]:
        config = ServerConfig(host_keys=[], trusted_user_ca_keys=str(self.trusted), **settings)
        clock = Clock()
        clock.advance(NOW)
        files = AuthorizedKeysFiles(str(self.authorized), home_of=lambda _: str(self.dir))
        return AuthorizedKeysChecker(files, clock), config

    def login(
        self, key: Path, algorithm: bytes, sign_as: bytes | None = None, **settings: Any
    ) -> Any:
        checker, config = self.checker(**settings)
        blob = _blob(Path(f"{key}-cert.pub").read_text())
        data = b"session and request bytes"
        private = Key.fromFile(str(key))
        signature = private.sign(data, signatureType=sign_as) if sign_as else private.sign(data)
        credentials = PeerSSHPrivateKey(
            b"alice", algorithm, blob, data, signature, "127.0.0.1", config
        )
        return checker._check(credentials)

    def test_ed25519_certificate_logs_in_and_is_described(self) -> None:
        """An ed25519 certificate logs in; the identity names its key ID, serial and CA."""
        key, _ = self.certify()
        identity: LoginIdentity = self.login(key, b"ssh-ed25519-cert-v01@openssh.com")
        self.assertEqual(identity.key_type, "ssh-ed25519-cert-v01@openssh.com")
        self.assertIn('ID "cert1" serial 1 CA ssh-ed25519 SHA256:', identity.fingerprint)
        self.assertTrue(identity.options.port_forwarding)

    def test_rsa_certificate_with_sha2_signatures(self) -> None:
        """An RSA certificate logs in with rsa-sha2-256 and rsa-sha2-512, not mixed up."""
        self.count += 1
        key = self.key("rsa", "rsa")
        self.keygen("-s", str(self.ca), "-I", "r", "-n", "alice", f"{key}.pub")
        self.login(key, b"rsa-sha2-256-cert-v01@openssh.com", b"rsa-sha2-256")
        self.login(key, b"rsa-sha2-512-cert-v01@openssh.com", b"rsa-sha2-512")
        with self.assertRaises(UnauthorizedLogin):
            self.login(key, b"rsa-sha2-512-cert-v01@openssh.com", b"rsa-sha2-256")

    def test_algorithm_must_match_certificate_type(self) -> None:
        """An ed25519 certificate sent as an ECDSA certificate algorithm is refused."""
        key, _ = self.certify()
        with self.assertRaises(UnauthorizedLogin) as raised:
            self.login(key, b"ecdsa-sha2-nistp256-cert-v01@openssh.com")
        self.assertIn("ssh-ed25519-cert-v01@openssh.com", str(raised.exception))

    def test_query_without_signature(self) -> None:
        """A certificate offered without a signature gets PK_OK (ValidPublicKey) once checked."""
        key, _ = self.certify()
        checker, config = self.checker()
        blob = _blob(Path(f"{key}-cert.pub").read_text())
        credentials = PeerSSHPrivateKey(
            b"alice", b"ssh-ed25519-cert-v01@openssh.com", blob, None, None, "127.0.0.1", config
        )
        self.assertRaises(ValidPublicKey, checker._check, credentials)

    def test_refusal_names_certificate(self) -> None:
        """A refused certificate's reason names its key ID and serial, as sshd's log does."""
        key, _ = self.certify(principals="bob")
        with self.assertRaises(UnauthorizedLogin) as raised:
            self.login(key, b"ssh-ed25519-cert-v01@openssh.com")
        self.assertIn('ID "cert1" serial 1: certificate invalid', str(raised.exception))

    def test_revoked_plain_key(self) -> None:
        """RevokedKeys refuses a plain key that authorized_keys lists."""
        user = self.key("plain")
        self.authorized.write_text(self.public(user))
        revoked = self.dir / "revoked"
        revoked.write_text(self.public(user))
        checker, config = self.checker(revoked_keys=str(revoked))
        credentials = PeerSSHPrivateKey(
            b"alice", b"ssh-ed25519", _blob(self.public(user)), None, None, "127.0.0.1", config
        )
        with self.assertRaises(UnauthorizedLogin) as raised:
            checker._check(credentials)
        self.assertIn("the key is revoked", str(raised.exception))

    def test_accepted_algorithms_default(self) -> None:
        """The certificate algorithms are accepted (and so announced) by default."""
        config = ServerConfig(host_keys=[])
        for algorithm in USER_CERTIFICATE_ALGORITHMS:
            self.assertIn(algorithm, config.pubkey_accepted_algorithms)
