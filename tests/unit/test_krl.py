"""
RevokedKeys files (L{twisted_rfwd.protocol.krl}): KRLs made by OpenSSH's C{ssh-keygen -k} in
the test (serials, serial ranges, key IDs, explicit keys, SHA-1 and SHA-256 hashes), and plain
files of public keys.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol.certificates import Certificate, parse_certificate
from twisted_rfwd.protocol.krl import KRL_MAGIC, Revocations, parse_krl, parse_revoked_keys


def _blob(line: str) -> bytes:
    return base64.b64decode(line.split()[1])


class KeygenCase(TestCase):
    """Keys, certificates and KRLs made by ssh-keygen in a temporary directory."""

    def setUp(self) -> None:
        if shutil.which("ssh-keygen") is None:
            raise SkipTest("ssh-keygen (openssh-client) is not installed")
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.ca = self.key("ca")
        self.other_ca = self.key("other_ca")

    def keygen(self, *args: str) -> None:
        subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True, timeout=30)

    def key(self, name: str) -> Path:
        path = self.dir / name
        self.keygen("-t", "ed25519", "-N", "", "-C", name, "-f", str(path))
        return path

    def public(self, key: Path) -> str:
        return Path(f"{key}.pub").read_text()

    def certificate(
        self, name: str, serial: int, key_id: str, ca: Path | None = None
    ) -> tuple[Path, Certificate]:
        key = self.key(name)
        ca = ca or self.ca
        self.keygen("-s", str(ca), "-I", key_id, "-n", "alice", "-z", str(serial), f"{key}.pub")
        text = Path(f"{key}-cert.pub").read_text()
        return key, parse_certificate(_blob(text))

    def krl(self, spec: str, ca: Path | None = None, *keys: Path) -> bytes:
        """A KRL from a ssh-keygen -k spec file (with CA C{ca}) and public key files."""
        spec_file = self.dir / "spec"
        spec_file.write_text(spec)
        out = self.dir / "krl"
        out.unlink(missing_ok=True)
        args = ["-k", "-f", str(out)]
        if ca is not None:
            args += ["-s", f"{ca}.pub"]
        files = [str(spec_file)] if spec else []
        self.keygen(*args, *files, *(f"{k}.pub" for k in keys))
        return out.read_bytes()


class KRLTests(KeygenCase):
    def test_serial_list_and_range(self) -> None:
        """Serials listed or in a range are revoked for that CA only; others are not."""
        data = self.krl("serial: 7\nserial: 20-30\n", self.ca)
        revocations = parse_revoked_keys(data)
        for serial, revoked in ((7, True), (8, False), (20, True), (25, True), (31, False)):
            _, cert = self.certificate(f"u{serial}", serial, "id")
            reason = revocations.refusal(cert.key_blob, cert)
            self.assertEqual(reason is not None, revoked, (serial, reason))
        _, foreign = self.certificate("f", 7, "id", self.other_ca)
        self.assertIsNone(revocations.refusal(foreign.key_blob, foreign))

    def test_serial_reason_names_serial(self) -> None:
        """The reason says which serial is revoked."""
        revocations = parse_revoked_keys(self.krl("serial: 42\n", self.ca))
        _, cert = self.certificate("u", 42, "id")
        self.assertEqual(
            revocations.refusal(cert.key_blob, cert), "certificate serial 42 is revoked"
        )

    def test_serial_bitmap(self) -> None:
        """Many close serials (ssh-keygen writes a bitmap for them) are each revoked."""
        spec = "".join(f"serial: {n}\n" for n in range(100, 200, 3))
        data = self.krl(spec, self.ca)
        krl = parse_krl(data)
        revoked = krl.by_ca[_blob(self.public(self.ca))]
        numbers = {n for low, high in revoked.ranges for n in range(low, high + 1)}
        self.assertEqual(numbers, set(range(100, 200, 3)))

    def test_key_id(self) -> None:
        """A revoked key ID revokes every certificate of that CA with that ID."""
        revocations = parse_revoked_keys(self.krl("id: bad-laptop\n", self.ca))
        _, bad = self.certificate("b", 1, "bad-laptop")
        _, good = self.certificate("g", 2, "good-laptop")
        self.assertEqual(
            revocations.refusal(bad.key_blob, bad), 'certificate key ID "bad-laptop" is revoked'
        )
        self.assertIsNone(revocations.refusal(good.key_blob, good))

    def test_key_id_for_any_ca(self) -> None:
        """
        A certificates section with an empty CA (which ssh-keygen does not write, so it is
        added to one of its KRLs here) applies to every CA.
        """

        def string(data: bytes) -> bytes:
            return len(data).to_bytes(4, "big") + data

        key_ids = b"\x23" + string(string(b"everywhere"))
        section = b"\x01" + string(string(b"") + string(b"") + key_ids)
        revocations = parse_revoked_keys(self.krl("", None) + section)
        _, cert = self.certificate("b", 1, "everywhere", self.other_ca)
        self.assertIsNotNone(revocations.refusal(cert.key_blob, cert))

    def test_serial_zero_never_revoked_by_serial(self) -> None:
        """Serial 0 (a CA that set none) is not revoked by a range that would cover it."""
        revocations = parse_revoked_keys(self.krl("serial: 1-5\n", self.ca))
        _, cert = self.certificate("z", 0, "id")
        self.assertIsNone(revocations.refusal(cert.key_blob, cert))

    def test_explicit_key(self) -> None:
        """A key given as a public key file is revoked, plain or certified; others are not."""
        user = self.key("user")
        other = self.key("other")
        revocations = parse_revoked_keys(self.krl("", None, user))
        self.assertEqual(revocations.refusal(_blob(self.public(user))), "the key is revoked")
        self.assertIsNone(revocations.refusal(_blob(self.public(other))))
        self.keygen("-s", str(self.ca), "-I", "x", f"{user}.pub")
        cert = parse_certificate(_blob(Path(f"{user}-cert.pub").read_text()))
        self.assertEqual(revocations.refusal(cert.key_blob, cert), "the key is revoked")

    def test_revoked_ca_revokes_its_certificates(self) -> None:
        """A revoked CA key revokes every certificate it signed."""
        revocations = parse_revoked_keys(self.krl("", None, self.ca))
        _, cert = self.certificate("u", 5, "id")
        self.assertEqual(
            revocations.refusal(cert.key_blob, cert), "the certificate's CA key is revoked"
        )

    def test_sha1_and_sha256_hashes(self) -> None:
        """Keys revoked by SHA-1 or by SHA-256 hash are revoked; another key is not."""
        one, two, three = self.key("one"), self.key("two"), self.key("three")
        fingerprint = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{two}.pub"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[1]
        spec = f"sha1: {self.public(one)}hash: {fingerprint}\n"
        krl = parse_krl(self.krl(spec))
        self.assertEqual((len(krl.sha1), len(krl.sha256)), (1, 1))
        revocations = Revocations(krl=krl)
        self.assertIsNotNone(revocations.refusal(_blob(self.public(one))))
        self.assertIsNotNone(revocations.refusal(_blob(self.public(two))))
        self.assertIsNone(revocations.refusal(_blob(self.public(three))))

    def test_empty_krl_revokes_nothing(self) -> None:
        """A KRL with no sections parses and revokes nothing."""
        data = self.krl("", None)
        self.assertTrue(data.startswith(KRL_MAGIC))
        self.assertIsNone(parse_revoked_keys(data).refusal(_blob(self.public(self.ca))))


class MalformedKRLTests(KeygenCase):
    def test_truncated(self) -> None:
        """A truncated KRL is an error (sshd then refuses every key)."""
        data = self.krl("serial: 7\n", self.ca)
        self.assertRaises(MalformedPacket, parse_revoked_keys, data[:-3])

    def test_signature_section_refused(self) -> None:
        """A signature section (OpenSSH 9.4+ refuses signed KRLs) is an error."""
        data = self.krl("", None) + b"\x04" + b"\x00\x00\x00\x00"
        self.assertRaises(MalformedPacket, parse_krl, data)

    def test_critical_extension_refused_other_ignored(self) -> None:
        """An unknown critical extension is an error; an unknown optional one is ignored."""
        base = self.krl("", None)

        def extension(critical: bool) -> bytes:
            body = b"\x00\x00\x00\x03x@y" + bytes([critical]) + b"\x00\x00\x00\x00"
            return b"\xff" + len(body).to_bytes(4, "big") + body

        self.assertRaises(MalformedPacket, parse_krl, base + extension(True))
        parse_krl(base + extension(False))

    def test_unknown_version(self) -> None:
        """A format version other than 1 is an error."""
        data = bytearray(self.krl("", None))
        data[len(KRL_MAGIC) + 3] = 2
        self.assertRaises(MalformedPacket, parse_krl, bytes(data))


class PlainFileTests(KeygenCase):
    def test_listed_key_and_its_certificates(self) -> None:
        """A key listed in a plain file is revoked, and so is every certificate of it."""
        user, other = self.key("user"), self.key("other")
        text = f"# revoked\n\n{self.public(user)}not a key line\n".encode()
        revocations = parse_revoked_keys(text)
        self.assertIsNotNone(revocations.refusal(_blob(self.public(user))))
        self.assertIsNone(revocations.refusal(_blob(self.public(other))))
        self.keygen("-s", str(self.ca), "-I", "x", f"{user}.pub")
        cert = parse_certificate(_blob(Path(f"{user}-cert.pub").read_text()))
        self.assertIsNotNone(revocations.refusal(cert.key_blob, cert))

    def test_listed_ca(self) -> None:
        """A CA key listed in a plain file revokes the certificates it signed."""
        revocations = parse_revoked_keys(self.public(self.ca).encode())
        _, cert = self.certificate("u", 3, "id")
        self.assertEqual(
            revocations.refusal(cert.key_blob, cert), "the certificate's CA key is revoked"
        )
