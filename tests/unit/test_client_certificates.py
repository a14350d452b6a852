"""
Tests for user certificates on the client: the files picked up (C{KEY-cert.pub} beside a key,
C{CertificateFile}), certificates the agent holds, the order they are offered in (each before
its plain key) and the algorithm and signature each is offered with.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.conch.ssh.keys import Key
from twisted.trial.unittest import SynchronousTestCase

from tests.support.certificates import make_certificate
from twisted_rfwd.client.agent import AgentClient, AgentIdentity, prepare_identities
from twisted_rfwd.client.identity import (
    CertifiedIdentity,
    Identity,
    load_user_certificate,
)
from twisted_rfwd.errors import KeyLoadError
from twisted_rfwd.protocol.certificates import HOST_CERT, USER_CERT
from twisted_rfwd.tap.client import _certificates


def ed25519_key() -> Key:
    return Key(ed25519.Ed25519PrivateKey.generate())


def write_cert(path: str, blob: bytes) -> None:
    with open(path, "wb") as f:
        f.write(b"ssh-ed25519-cert-v01@openssh.com " + base64.b64encode(blob) + b" c\n")


class PickupTests(SynchronousTestCase):
    """Which certificate files the client reads."""

    def test_cert_pub_beside_key_and_certificate_file(self) -> None:
        """CertificateFile first, then KEY-cert.pub beside each key file that has one."""
        directory = self.mktemp()
        import os

        os.makedirs(directory)
        key, ca = ed25519_key(), ed25519_key()
        beside = make_certificate(key, ca, kind=USER_CERT)
        extra = make_certificate(key, ca, kind=USER_CERT)
        write_cert(f"{directory}/id-cert.pub", beside)
        write_cert(f"{directory}/extra.pub", extra)
        found = _certificates([f"{directory}/id", f"{directory}/none"], [f"{directory}/extra.pub"])
        self.assertEqual(
            found, [(f"{directory}/extra.pub", extra), (f"{directory}/id-cert.pub", beside)]
        )

    def test_host_certificate_is_not_a_user_certificate(self) -> None:
        """A host certificate given as a user certificate is refused, saying so."""
        path = self.mktemp()
        write_cert(path, make_certificate(ed25519_key(), ed25519_key(), kind=HOST_CERT))
        error = self.assertRaises(KeyLoadError, load_user_certificate, path)
        self.assertIn("host certificate", str(error))


class _Agent(AgentClient):
    """Records sign requests; answers nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[bytes, int]] = []

    def sign(self, blob: bytes, data: bytes, flags: int = 0):  # type: ignore[no-untyped-def]
        from twisted.internet.defer import Deferred

        self.requests.append((blob, flags))
        return Deferred()


class OrderTests(SynchronousTestCase):
    """Certificates are offered right before their plain keys, signed by those keys."""

    def test_certificate_before_its_key(self) -> None:
        """The file's certificate goes before the file's key; other keys keep their place."""
        first, second, ca = ed25519_key(), ed25519_key(), ed25519_key()
        cert = make_certificate(second, ca, kind=USER_CERT)
        files = [Identity(first, "first"), Identity(second, "second")]
        offered = prepare_identities(files, [], False, [("second-cert.pub", cert)])
        self.assertEqual([i.source for i in offered], ["first", "second-cert.pub", "second"])
        certified = offered[1]
        self.assertIsInstance(certified, CertifiedIdentity)
        self.assertEqual(certified.public_blob, cert)
        self.assertEqual(certified.algorithm(None), b"ssh-ed25519-cert-v01@openssh.com")

    def test_certificate_signature_made_by_plain_key(self) -> None:
        """The signature is the plain key's, under the plain algorithm's name."""
        key, ca = ed25519_key(), ed25519_key()
        cert = make_certificate(key, ca, kind=USER_CERT)
        (certified, _) = prepare_identities([Identity(key, "k")], [], False, [("c", cert)])
        signed: list[bytes] = []
        certified.sign(b"data", b"ssh-ed25519-cert-v01@openssh.com").addCallback(signed.append)
        self.assertTrue(key.public().verify(signed[0], b"data"))

    def test_rsa_certificate_algorithm_follows_server_sig_algs(self) -> None:
        """An RSA certificate is offered as rsa-sha2-512-cert or -256-cert, as the server lists."""
        key = Key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        certified = CertifiedIdentity(key, "c", Identity(key, "k"), b"")
        self.assertEqual(
            certified.algorithm([b"rsa-sha2-256"]), b"rsa-sha2-256-cert-v01@openssh.com"
        )
        self.assertEqual(
            certified.algorithm([b"rsa-sha2-512", b"rsa-sha2-256"]),
            b"rsa-sha2-512-cert-v01@openssh.com",
        )

    def test_certificate_without_its_key_skipped(self) -> None:
        """A certificate whose key is neither a file nor in the agent is not offered."""
        cert = make_certificate(ed25519_key(), ed25519_key(), kind=USER_CERT)
        key = ed25519_key()
        offered = prepare_identities([Identity(key, "k")], [], False, [("c", cert)])
        self.assertEqual([i.source for i in offered], ["k"])

    def test_agent_certificate_signed_by_agent_under_certificate_blob(self) -> None:
        """An agent key signs for a CertificateFile whose key only the agent holds."""
        key, ca = ed25519_key(), ed25519_key()
        cert = make_certificate(key, ca, kind=USER_CERT)
        agent = _Agent()
        agent_key = AgentIdentity(key.public(), "agent key", agent)
        offered = prepare_identities([], [agent_key], True, [("c", cert)])
        self.assertEqual([i.source for i in offered], ["c"])
        offered[0].sign(b"data", b"ssh-ed25519-cert-v01@openssh.com")
        self.assertEqual(agent.requests, [(key.public().blob(), 0)])
