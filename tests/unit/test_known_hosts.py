"""
Tests for L{twisted_rfwd.client.known_hosts}: host-key checking against real known_hosts files.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.ssh.keys import Key
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from twisted_rfwd.client.config import HostKeyPolicy
from twisted_rfwd.client.known_hosts import KnownHosts, host_key_algorithms_for, key_type_name
from twisted_rfwd.errors import (
    ChangedHostKey,
    ChangedHostKeyForwardingDisabled,
    HostKeyError,
    RevokedHostKey,
    UnknownHostKey,
)

ED25519 = Key(ed25519.Ed25519PrivateKey.generate()).public()
ED25519_OTHER = Key(ed25519.Ed25519PrivateKey.generate()).public()
ECDSA = Key(ec.generate_private_key(ec.SECP256R1())).public()
RSA = Key(rsa.generate_private_key(public_exponent=65537, key_size=2048)).public()

OFFERED = [
    b"ssh-ed25519",
    b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384",
    b"rsa-sha2-512",
    b"rsa-sha2-256",
]


def openssh_fingerprint(key: Key) -> str:
    """The SHA256 fingerprint as C{ssh-keygen -l} prints it, computed independently."""
    digest = hashlib.sha256(key.blob()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def public_line(key: Key) -> str:
    """C{keytype base64} for C{key}."""
    text: str = key.toString("OPENSSH").decode("ascii")
    return text


def plain_entry(host_names: str, key: Key) -> str:
    """A plain known_hosts line."""
    return f"{host_names} {public_line(key)}"


def hashed_entry(host_id: str, key: Key, salt: bytes = b"0123456789abcdefghij") -> str:
    """A hashed known_hosts line, made as OpenSSH does: C{|1|salt|HMAC-SHA1(salt, host)}."""
    mac = hmac.new(salt, host_id.encode("utf-8"), hashlib.sha1).digest()
    encoded_salt = base64.b64encode(salt).decode("ascii")
    encoded_mac = base64.b64encode(mac).decode("ascii")
    return f"|1|{encoded_salt}|{encoded_mac} {public_line(key)}"


class KnownHostsTestCase(SynchronousTestCase):
    """Helpers for writing known_hosts files in a fresh directory."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)

    def write(self, name: str, *lines: str) -> str:
        """Write C{lines} to C{name} in the test directory; return its path."""
        path = os.path.join(self.directory, name)
        with open(path, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        return path

    def read(self, path: str) -> str:
        """The contents of C{path}."""
        with open(path) as f:
            return f.read()

    def capture_log(self) -> list[str]:
        """Collect formatted log messages for the rest of the test."""
        observer = _Collector()
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return observer.messages


@implementer(ILogObserver)
class _Collector:
    """A log observer keeping each event's formatted text."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        text = formatEvent(event)
        if text:
            self.messages.append(text)


class HostIdTests(SynchronousTestCase):
    """The name a server is filed under."""

    def test_port_22(self) -> None:
        """On port 22 the host is filed under its bare name."""
        self.assertEqual(
            KnownHosts(["/k"], HostKeyPolicy.YES, "example.com", 22).host_id, "example.com"
        )

    def test_other_port(self) -> None:
        """On any other port it is C{[host]:port}."""
        known = KnownHosts(["/k"], HostKeyPolicy.YES, "example.com", 2222)
        self.assertEqual(known.host_id, "[example.com]:2222")

    def test_ipv6(self) -> None:
        """IPv6 literals follow the same rule."""
        self.assertEqual(KnownHosts(["/k"], HostKeyPolicy.YES, "::1", 22).host_id, "::1")
        self.assertEqual(KnownHosts(["/k"], HostKeyPolicy.YES, "::1", 2200).host_id, "[::1]:2200")

    def test_lower_case(self) -> None:
        """Host names are compared in lower case, as OpenSSH does."""
        self.assertEqual(
            KnownHosts(["/k"], HostKeyPolicy.YES, "Example.COM", 22).host_id, "example.com"
        )

    def test_paths_required(self) -> None:
        """At least one file is needed."""
        self.assertRaises(ValueError, KnownHosts, [], HostKeyPolicy.YES, "h", 22)

    def test_tilde_expanded(self) -> None:
        """C{~} in paths is expanded."""
        known = KnownHosts(["~/kh"], HostKeyPolicy.YES, "h", 22)
        self.assertEqual(known.paths, [os.path.expanduser("~/kh")])
        self.assertNotIn("~", known.paths[0])


class HelperTests(SynchronousTestCase):
    """Naming key types and their signature algorithms."""

    def test_algorithms(self) -> None:
        """RSA keys are proven with SHA-2 signatures; other types by their own name."""
        self.assertEqual(host_key_algorithms_for(b"ssh-rsa"), [b"rsa-sha2-512", b"rsa-sha2-256"])
        self.assertEqual(host_key_algorithms_for(b"ssh-ed25519"), [b"ssh-ed25519"])

    def test_key_type_name(self) -> None:
        """Key types are named as OpenSSH names them in messages."""
        self.assertEqual(key_type_name(ED25519), "ED25519")
        self.assertEqual(key_type_name(ECDSA), "ECDSA")
        self.assertEqual(key_type_name(RSA), "RSA")


class VerifyKnownTests(KnownHostsTestCase):
    """Keys that are recorded are accepted."""

    def test_plain_entry(self) -> None:
        """A plain entry for the host accepts its key, among other hosts' entries."""
        path = self.write(
            "known_hosts",
            "# comment",
            plain_entry("other.example", ED25519_OTHER),
            "",
            plain_entry("example.com,192.0.2.1", ED25519),
        )
        KnownHosts([path], HostKeyPolicy.YES, "example.com", 22).verify(ED25519)
        KnownHosts([path], HostKeyPolicy.YES, "192.0.2.1", 22).verify(ED25519)

    def test_plain_entry_mixed_case(self) -> None:
        """A host given in upper case matches its lower-case entry."""
        path = self.write("known_hosts", plain_entry("example.com", ECDSA))
        KnownHosts([path], HostKeyPolicy.YES, "EXAMPLE.com", 22).verify(ECDSA)

    def test_hashed_entry_by_hand(self) -> None:
        """An entry hashed with HMAC-SHA1 as OpenSSH writes it is recognised."""
        path = self.write("known_hosts", hashed_entry("example.com", ED25519))
        KnownHosts([path], HostKeyPolicy.YES, "example.com", 22).verify(ED25519)

    def test_hashed_entry_other_port(self) -> None:
        """A hashed entry for C{[host]:port} is recognised on that port."""
        path = self.write("known_hosts", hashed_entry("[example.com]:2222", RSA))
        KnownHosts([path], HostKeyPolicy.YES, "example.com", 2222).verify(RSA)

    def test_hashed_entry_from_conch(self) -> None:
        """An entry written by Conch's L{KnownHostsFile} is recognised."""
        path = os.path.join(self.directory, "known_hosts")
        conch = KnownHostsFile.fromPath(FilePath(path))
        conch.addHostKey(b"example.com", ECDSA)
        conch.save()
        self.assertTrue(self.read(path).startswith("|1|"))
        KnownHosts([path], HostKeyPolicy.YES, "example.com", 22).verify(ECDSA)

    def test_bracketed_entry(self) -> None:
        """A plain C{[host]:port} entry is recognised on that port."""
        path = self.write("known_hosts", plain_entry("[example.com]:2222", ED25519))
        KnownHosts([path], HostKeyPolicy.YES, "example.com", 2222).verify(ED25519)

    def test_second_file(self) -> None:
        """Entries in any of the files count."""
        first = self.write("a", plain_entry("other.example", ED25519))
        second = self.write("b", plain_entry("example.com", ED25519))
        KnownHosts([first, second], HostKeyPolicy.YES, "example.com", 22).verify(ED25519)

    def test_several_keys_of_one_type(self) -> None:
        """A host may have several keys of one type recorded; any of them is accepted."""
        path = self.write(
            "known_hosts",
            plain_entry("example.com", ED25519_OTHER),
            plain_entry("example.com", ED25519),
        )
        KnownHosts([path], HostKeyPolicy.YES, "example.com", 22).verify(ED25519)
        KnownHosts([path], HostKeyPolicy.YES, "example.com", 22).verify(ED25519_OTHER)

    def test_mismatch_in_first_file_match_in_second(self) -> None:
        """A matching entry in a later file is enough, as OpenSSH reads all files together."""
        first = self.write("a", plain_entry("example.com", ED25519_OTHER))
        second = self.write("b", plain_entry("example.com", ED25519))
        KnownHosts([first, second], HostKeyPolicy.YES, "example.com", 22).verify(ED25519)

    def test_verify_leaves_file_alone(self) -> None:
        """Accepting a known key does not write to the file."""
        content = plain_entry("example.com", ED25519) + "\n"
        path = self.write("known_hosts", plain_entry("example.com", ED25519))
        KnownHosts([path], HostKeyPolicy.ACCEPT_NEW, "example.com", 22).verify(ED25519)
        self.assertEqual(self.read(path), content)


class VerifyUnknownTests(KnownHostsTestCase):
    """Keys that are not recorded, under each policy."""

    def test_unknown_under_yes(self) -> None:
        """Under C{yes} an unknown key raises, giving its fingerprint and what to do."""
        path = self.write("known_hosts", plain_entry("other.example", ED25519))
        known = KnownHosts([path], HostKeyPolicy.YES, "example.com", 22)
        error = self.assertRaises(UnknownHostKey, known.verify, ED25519)
        message = str(error)
        self.assertIn(openssh_fingerprint(ED25519), message)
        self.assertIn("accept-new", message)
        self.assertIn(path, message)
        self.assertIn("ED25519", message)
        self.assertIn("'ssh-keyscan example.com'", message)
        self.assertEqual(error.fingerprint, openssh_fingerprint(ED25519))
        self.assertEqual((error.host, error.port, error.known_hosts), ("example.com", 22, path))
        self.assertIsInstance(error, HostKeyError)
        self.assertEqual(self.read(path), plain_entry("other.example", ED25519) + "\n")

    def test_unknown_other_port_message(self) -> None:
        """Off port 22 the message names C{[host]:port} and the keyscan port."""
        path = os.path.join(self.directory, "missing")
        known = KnownHosts([path], HostKeyPolicy.YES, "example.com", 2222)
        error = self.assertRaises(UnknownHostKey, known.verify, RSA)
        message = str(error)
        self.assertIn("no RSA host key for [example.com]:2222", message)
        self.assertIn("'ssh-keyscan -p 2222 example.com'", message)
        self.assertFalse(os.path.exists(path))

    def test_port_22_entry_not_for_other_port(self) -> None:
        """An entry for the host on port 22 says nothing about C{[host]:2222}."""
        path = self.write("known_hosts", plain_entry("example.com", ED25519))
        known = KnownHosts([path], HostKeyPolicy.YES, "example.com", 2222)
        self.assertRaises(UnknownHostKey, known.verify, ED25519)
        self.assertEqual(known.recorded_key_types(), [])

    def test_other_port_entry_not_for_port_22(self) -> None:
        """An entry for C{[host]:2222} says nothing about the host on port 22."""
        path = self.write("known_hosts", plain_entry("[example.com]:2222", ED25519))
        known = KnownHosts([path], HostKeyPolicy.YES, "example.com", 22)
        self.assertRaises(UnknownHostKey, known.verify, ED25519)

    def test_other_type_recorded(self) -> None:
        """A key of a type not recorded for the host is unknown, not changed."""
        path = self.write("known_hosts", plain_entry("example.com", ED25519))
        known = KnownHosts([path], HostKeyPolicy.YES, "example.com", 22)
        self.assertRaises(UnknownHostKey, known.verify, ECDSA)

    def test_missing_file_under_yes(self) -> None:
        """A known_hosts file that does not exist knows no hosts."""
        path = os.path.join(self.directory, "nope", "known_hosts")
        known = KnownHosts([path], HostKeyPolicy.YES, "example.com", 22)
        error = self.assertRaises(UnknownHostKey, known.verify, ED25519)
        self.assertEqual(error.known_hosts, path)

    def test_accept_new_appends(self) -> None:
        """Under C{accept-new} the key is appended to the first file and then known."""
        existing = plain_entry("other.example", ED25519_OTHER)
        first = self.write("a", existing)
        second = self.write("b")
        messages = self.capture_log()
        KnownHosts([first, second], HostKeyPolicy.ACCEPT_NEW, "example.com", 22).verify(ED25519)
        lines = self.read(first).splitlines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[0], existing)
        self.assertTrue(lines[1].startswith("|1|"), lines[1])
        self.assertTrue(lines[1].endswith(public_line(ED25519)), lines[1])
        self.assertEqual(self.read(second), "")
        KnownHosts([first, second], HostKeyPolicy.YES, "example.com", 22).verify(ED25519)
        self.assertTrue(
            any(openssh_fingerprint(ED25519) in m and "Permanently added" in m for m in messages),
            messages,
        )

    def test_accept_new_other_port(self) -> None:
        """A key accepted for C{[host]:2222} is filed under that name only."""
        path = self.write("known_hosts")
        KnownHosts([path], HostKeyPolicy.ACCEPT_NEW, "example.com", 2222).verify(ED25519)
        KnownHosts([path], HostKeyPolicy.YES, "example.com", 2222).verify(ED25519)
        known22 = KnownHosts([path], HostKeyPolicy.YES, "example.com", 22)
        self.assertRaises(UnknownHostKey, known22.verify, ED25519)

    def test_accept_new_creates_file(self) -> None:
        """Under C{accept-new} a missing file and its directory are created."""
        path = os.path.join(self.directory, "new", "known_hosts")
        KnownHosts([path], HostKeyPolicy.ACCEPT_NEW, "example.com", 22).verify(RSA)
        self.assertEqual(len(self.read(path).splitlines()), 1)
        KnownHosts([path], HostKeyPolicy.YES, "example.com", 22).verify(RSA)

    def test_accept_new_without_final_newline(self) -> None:
        """Appending to a file whose last line lacks a newline keeps both entries intact."""
        path = os.path.join(self.directory, "known_hosts")
        with open(path, "w") as f:
            f.write(plain_entry("other.example", ED25519_OTHER))
        KnownHosts([path], HostKeyPolicy.ACCEPT_NEW, "example.com", 22).verify(ED25519)
        lines = self.read(path).splitlines()
        self.assertEqual(lines[0], plain_entry("other.example", ED25519_OTHER))
        KnownHosts([path], HostKeyPolicy.YES, "other.example", 22).verify(ED25519_OTHER)
        KnownHosts([path], HostKeyPolicy.YES, "example.com", 22).verify(ED25519)

    def test_accept_new_unwritable(self) -> None:
        """If the key cannot be recorded the connection still proceeds, with a warning."""
        blocker = self.write("not-a-directory")
        path = os.path.join(blocker, "known_hosts")
        messages = self.capture_log()
        KnownHosts([path], HostKeyPolicy.ACCEPT_NEW, "example.com", 22).verify(ED25519)
        self.assertTrue(any("Could not record" in m for m in messages), messages)

    def test_no_adds_unknown(self) -> None:
        """Under C{no} an unknown key is accepted and recorded, as OpenSSH does."""
        path = self.write("known_hosts")
        KnownHosts([path], HostKeyPolicy.NO, "example.com", 22).verify(ECDSA)
        KnownHosts([path], HostKeyPolicy.YES, "example.com", 22).verify(ECDSA)


class VerifyChangedTests(KnownHostsTestCase):
    """A different key where one of the same type is recorded."""

    def test_changed_under_yes(self) -> None:
        """A changed key raises, naming the file and line of the recorded entry."""
        path = self.write(
            "known_hosts",
            "# my hosts",
            plain_entry("other.example", ED25519),
            plain_entry("example.com", ED25519_OTHER),
        )
        known = KnownHosts([path], HostKeyPolicy.YES, "example.com", 22)
        error = self.assertRaises(ChangedHostKey, known.verify, ED25519)
        self.assertEqual((error.known_hosts, error.line), (path, 3))
        message = str(error)
        self.assertIn(f"{path}:3", message)
        self.assertIn("HOST KEY FOR example.com HAS CHANGED", message)
        self.assertIn(openssh_fingerprint(ED25519), message)
        self.assertIn(f'ssh-keygen -R "example.com" -f {path}', message)

    def test_changed_in_second_file(self) -> None:
        """The file named is the one holding the entry."""
        first = self.write("a", plain_entry("other.example", ED25519))
        second = self.write("b", hashed_entry("[example.com]:2222", ED25519_OTHER))
        known = KnownHosts([first, second], HostKeyPolicy.YES, "example.com", 2222)
        error = self.assertRaises(ChangedHostKey, known.verify, ED25519)
        self.assertEqual((error.known_hosts, error.line), (second, 1))
        self.assertIn("HOST KEY FOR [example.com]:2222 HAS CHANGED", str(error))

    def test_changed_under_accept_new(self) -> None:
        """C{accept-new} does not accept a changed key, and does not record it."""
        content = plain_entry("example.com", ED25519_OTHER) + "\n"
        path = self.write("known_hosts", plain_entry("example.com", ED25519_OTHER))
        known = KnownHosts([path], HostKeyPolicy.ACCEPT_NEW, "example.com", 22)
        self.assertRaises(ChangedHostKey, known.verify, ED25519)
        self.assertEqual(self.read(path), content)

    def test_changed_under_no(self) -> None:
        """C{no} refuses a changed key too (ssh would disable passwords and forwarding),
        naming the entry and leaving the file as it was."""
        content = plain_entry("example.com", ED25519_OTHER) + "\n"
        path = self.write("known_hosts", plain_entry("example.com", ED25519_OTHER))
        known = KnownHosts([path], HostKeyPolicy.NO, "example.com", 22)
        error = self.assertRaises(ChangedHostKeyForwardingDisabled, known.verify, ED25519)
        self.assertEqual((error.known_hosts, error.line), (path, 1))
        self.assertIn(openssh_fingerprint(ED25519), str(error))
        self.assertEqual(self.read(path), content)


class OrderAlgorithmsTests(KnownHostsTestCase):
    """Asking first for the host-key algorithms already recorded for the host."""

    def test_rsa_recorded(self) -> None:
        """An C{ssh-rsa} entry puts the SHA-2 RSA algorithms first, the rest in order."""
        path = self.write("known_hosts", plain_entry("example.com", RSA))
        known = KnownHosts([path], HostKeyPolicy.YES, "example.com", 22)
        self.assertEqual(known.recorded_key_types(), [b"ssh-rsa"])
        self.assertEqual(
            known.order_algorithms(OFFERED),
            [
                b"rsa-sha2-512",
                b"rsa-sha2-256",
                b"ssh-ed25519",
                b"ecdsa-sha2-nistp256",
                b"ecdsa-sha2-nistp384",
            ],
        )

    def test_several_recorded(self) -> None:
        """Several recorded types come first in file order, each once."""
        path = self.write(
            "known_hosts",
            hashed_entry("example.com", ECDSA),
            plain_entry("other.example", ED25519),
            plain_entry("example.com", RSA),
            plain_entry("example.com", ECDSA),
        )
        known = KnownHosts([path], HostKeyPolicy.YES, "example.com", 22)
        self.assertEqual(known.recorded_key_types(), [b"ecdsa-sha2-nistp256", b"ssh-rsa"])
        self.assertEqual(
            known.order_algorithms(OFFERED),
            [
                b"ecdsa-sha2-nistp256",
                b"rsa-sha2-512",
                b"rsa-sha2-256",
                b"ssh-ed25519",
                b"ecdsa-sha2-nistp384",
            ],
        )

    def test_nothing_recorded(self) -> None:
        """With no entry for the host the offered order is kept."""
        path = self.write("known_hosts", plain_entry("other.example", RSA))
        known = KnownHosts([path], HostKeyPolicy.YES, "example.com", 22)
        self.assertEqual(known.order_algorithms(OFFERED), OFFERED)

    def test_not_offered(self) -> None:
        """A recorded type whose algorithms are not offered adds nothing."""
        path = self.write("known_hosts", plain_entry("example.com", RSA))
        known = KnownHosts([path], HostKeyPolicy.YES, "example.com", 22)
        offered = [b"ssh-ed25519", b"ecdsa-sha2-nistp256"]
        self.assertEqual(known.order_algorithms(offered), offered)

    def test_port_respected(self) -> None:
        """Only entries for the right port count."""
        path = self.write(
            "known_hosts",
            plain_entry("example.com", RSA),
            plain_entry("[example.com]:2222", ECDSA),
        )
        known = KnownHosts([path], HostKeyPolicy.YES, "example.com", 2222)
        self.assertEqual(known.recorded_key_types(), [b"ecdsa-sha2-nistp256"])
        self.assertEqual(known.order_algorithms(OFFERED)[0], b"ecdsa-sha2-nistp256")


class RevokedTests(SynchronousTestCase):
    def test_revoked_key_is_refused_even_when_listed(self) -> None:
        """A key marked @revoked for the host is refused, even under accept-new."""
        directory = FilePath(self.mktemp())
        directory.makedirs()
        path = directory.child("known_hosts").path
        key = Key(ed25519.Ed25519PrivateKey.generate())
        line = key.public().toString("OPENSSH")
        with open(path, "wb") as f:
            f.write(b"[server]:2222 " + line + b"\n@revoked * " + line + b"\n")
        known = KnownHosts([path], HostKeyPolicy.ACCEPT_NEW, "server", 2222)
        error = self.assertRaises(RevokedHostKey, known.verify, key.public())
        self.assertEqual(error.line, 2)
        self.assertIn("@revoked", str(error))

    def test_revocation_for_another_host_does_not_apply(self) -> None:
        """A revocation whose host pattern does not match leaves the key usable."""
        directory = FilePath(self.mktemp())
        directory.makedirs()
        path = directory.child("known_hosts").path
        key = Key(ed25519.Ed25519PrivateKey.generate())
        line = key.public().toString("OPENSSH")
        with open(path, "wb") as f:
            f.write(b"server " + line + b"\n@revoked other.example " + line + b"\n")
        KnownHosts([path], HostKeyPolicy.YES, "server", 22).verify(key.public())
