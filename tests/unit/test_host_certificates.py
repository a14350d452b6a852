"""
Tests for host certificates in L{twisted_rfwd.client.known_hosts}: C{@cert-authority} lines
(patterns, C{[host]:port}), the checks ssh makes, the fallback to the plain key, C{@revoked},
and the order of host key algorithms; and rfwd-server's certified host key table.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh.keys import Key
from twisted.trial.unittest import SynchronousTestCase

from tests.support.certificates import NOW, make_certificate, string
from twisted_rfwd.client.config import HostKeyPolicy
from twisted_rfwd.client.known_hosts import (
    InvalidHostCertificate,
    KnownHosts,
    certificate_problem,
)
from twisted_rfwd.errors import RevokedHostKey, UnknownHostKey
from twisted_rfwd.protocol.certificates import (
    FOREVER,
    USER_CERT,
    Certificate,
    parse_certificate,
)
from twisted_rfwd.server.host_keys import host_key_tables


def new_key() -> Key:
    return Key(ed25519.Ed25519PrivateKey.generate())


class HostCertificateTests(SynchronousTestCase):
    """KnownHosts.verify_certificate against real files."""

    def setUp(self) -> None:
        self.ca = new_key()
        self.host_key = new_key()
        self.path = self.mktemp()

    def known(self, lines: str, host: str = "example.com", port: int = 22) -> KnownHosts:
        with open(self.path, "w") as f:
            f.write(lines)
        return KnownHosts(self.path, HostKeyPolicy.YES, host, port)

    def ca_line(self, patterns: str, marker: str = "@cert-authority") -> str:
        return f"{marker} {patterns} {self.ca.public().toString('OPENSSH').decode()}\n"

    def cert(self, **kwargs: object) -> Certificate:
        return parse_certificate(make_certificate(self.host_key, self.ca, **kwargs))  # type: ignore[arg-type]

    def test_accepted_by_matching_authority(self) -> None:
        """A valid host certificate from a CA on a @cert-authority line for the host passes."""
        self.known(self.ca_line("example.com")).verify_certificate(self.cert(), NOW)

    def test_wildcard_and_bracketed_patterns(self) -> None:
        """Wildcards match; C{[host]:port} is literal (not a character class) and needs the port."""
        self.known(self.ca_line("*.com")).verify_certificate(self.cert(), NOW)
        cert = self.cert()
        known = self.known(self.ca_line("[example.com]:2222"), port=2222)
        known.verify_certificate(cert, NOW)
        wrong_port = self.known(self.ca_line("[example.com]:2200"), port=2222)
        self.assertRaises(UnknownHostKey, wrong_port.verify_certificate, cert, NOW)

    def test_other_host_pattern_falls_back(self) -> None:
        """A @cert-authority line for other hosts does not apply: the plain key is looked up."""
        known = self.known(self.ca_line("other.org"))
        self.assertRaises(UnknownHostKey, known.verify_certificate, self.cert(), NOW)

    def test_invalid_certificates_fall_back_to_plain_key(self) -> None:
        """
        Expired, not yet valid, wrong principal, user certificate, critical options: each
        refused as a certificate, then the plain key accepted when known_hosts holds it.
        """
        plain = f"example.com {self.host_key.public().toString('OPENSSH').decode()}\n"
        cases = {
            "Certificate invalid: expired": self.cert(valid=(NOW - 100, NOW - 10)),
            "Certificate invalid: not yet valid": self.cert(valid=(NOW + 10, FOREVER)),
            "Certificate invalid: name is not a listed principal": self.cert(principals=("x",)),
            "Certificate invalid: not a host certificate": self.cert(kind=USER_CERT),
            "Certificate contains unsupported critical options": self.cert(
                critical=string(b"force-command") + string(string(b"true"))
            ),
        }
        for reason, cert in cases.items():
            self.assertEqual(certificate_problem(cert, "example.com", NOW), reason)
            without = self.known(self.ca_line("example.com"))
            self.assertRaises(UnknownHostKey, without.verify_certificate, cert, NOW)
            self.known(self.ca_line("example.com") + plain).verify_certificate(cert, NOW)

    def test_empty_principals_and_wildcard_principal(self) -> None:
        """No principals means any host; a principal C{*.com} matches the host (ssh allows it)."""
        self.assertIsNone(certificate_problem(self.cert(principals=()), "example.com", NOW))
        self.assertIsNone(certificate_problem(self.cert(principals=("*.com",)), "example.com", NOW))

    def test_forged_signature_refused(self) -> None:
        """A certificate whose signature is not its CA's is refused outright, no fallback."""
        blob = make_certificate(self.host_key, self.ca)
        forged = parse_certificate(blob[:-8] + bytes(8))
        plain = f"example.com {self.host_key.public().toString('OPENSSH').decode()}\n"
        known = self.known(self.ca_line("example.com") + plain)
        self.assertRaises(InvalidHostCertificate, known.verify_certificate, forged, NOW)

    def test_revoked_ca_refused_without_fallback(self) -> None:
        """A CA marked @revoked for the host refuses its certificates even with a plain entry."""
        plain = f"example.com {self.host_key.public().toString('OPENSSH').decode()}\n"
        lines = self.ca_line("example.com") + self.ca_line("*", "@revoked") + plain
        error = self.assertRaises(
            RevokedHostKey, self.known(lines).verify_certificate, self.cert(), NOW
        )
        self.assertIn("marked @revoked", str(error))

    def test_revoked_host_key_refuses_its_certificate(self) -> None:
        """The certified key marked @revoked refuses the certificate too."""
        revoked = f"@revoked * {self.host_key.public().toString('OPENSSH').decode()}\n"
        known = self.known(self.ca_line("example.com") + revoked)
        self.assertRaises(RevokedHostKey, known.verify_certificate, self.cert(), NOW)

    def test_certificate_algorithms_first_with_authority(self) -> None:
        """With a @cert-authority line for the host, certificate algorithms go first."""
        offered = [b"ssh-ed25519-cert-v01@openssh.com", b"ssh-ed25519", b"rsa-sha2-512"]
        plain_first = [b"ssh-ed25519", b"rsa-sha2-512", b"ssh-ed25519-cert-v01@openssh.com"]
        self.assertEqual(
            self.known(self.ca_line("example.com")).order_algorithms(plain_first),
            [b"ssh-ed25519-cert-v01@openssh.com", b"ssh-ed25519", b"rsa-sha2-512"],
        )
        rsa_known = self.known("example.com " + _rsa_line())
        self.assertEqual(
            rsa_known.order_algorithms(offered),
            [b"rsa-sha2-512", b"ssh-ed25519-cert-v01@openssh.com", b"ssh-ed25519"],
        )


def _rsa_line() -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = Key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    line: str = key.public().toString("OPENSSH").decode()
    return line + "\n"


class ServerHostKeyTableTests(SynchronousTestCase):
    """rfwd-server's host keys with their certificates, as Conch looks them up."""

    def test_certificate_under_its_algorithm_signing_with_plain_key(self) -> None:
        """K_S is the certificate; the exchange hash is signed by the plain key, plain name."""
        key, ca = new_key(), new_key()
        blob = make_certificate(key, ca)
        public, private = host_key_tables([key], [blob])
        name = b"ssh-ed25519-cert-v01@openssh.com"
        self.assertEqual(public[name].blob(), blob)  # type: ignore[attr-defined]
        signature = private[name].sign(b"hash", signatureType=name)  # type: ignore[attr-defined]
        self.assertTrue(key.public().verify(signature, b"hash"))
        plain = public[b"ssh-ed25519"]
        self.assertEqual(plain.blob(), key.public().blob())  # type: ignore[attr-defined]

    def test_certificate_of_another_key_refused(self) -> None:
        """A certificate certifying none of the host keys is an error at start."""
        blob = make_certificate(new_key(), new_key())
        self.assertRaises(ValueError, host_key_tables, [new_key()], [blob])
