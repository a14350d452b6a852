"""
Password logins' pieces without a connection: the file of bcrypt hashes as rfwd-server reads
it, the C{rfwd-passwd} command that writes it (standard input mode), sshd's AllowUsers /
DenyUsers / AllowGroups / DenyGroups, and which methods a configuration offers.
"""

from __future__ import annotations

import grp
import io
import os
import stat
from pathlib import Path

import bcrypt
from twisted.trial.unittest import SynchronousTestCase

from tests.support.keys import new_key
from tests.support.logs import CapturedLog
from twisted_rfwd.server.auth import access_refusal, auth_methods, match_user
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.passwd import main
from twisted_rfwd.server.passwords import (
    DEFAULT_COST,
    PasswordHashes,
    dummy_hash,
    parse_password_hashes,
    read_password_hashes,
)

# Cost 4: the cheapest bcrypt, so the tests stay fast.
ALICE_HASH = bcrypt.hashpw(b"alice's secret", bcrypt.gensalt(4))
BOB_HASH = bcrypt.hashpw(b"bob's secret", bcrypt.gensalt(5))


class HashFileTests(SynchronousTestCase):
    def test_lines_comments_and_blank_lines(self) -> None:
        """user:hash lines are read; comments, blank lines and surrounding spaces are not."""
        text = b"# users\n\nalice:" + ALICE_HASH + b"\n  bob:" + BOB_HASH + b"  \r\n"
        hashes, warnings = parse_password_hashes(text, "pw")
        self.assertEqual(hashes.hashes, {"alice": ALICE_HASH, "bob": BOB_HASH})
        self.assertEqual(warnings, [])

    def test_malformed_lines_are_named_and_skipped(self) -> None:
        """Each unusable line gets one warning naming the file and line; the rest still count."""
        text = b"\n".join(
            [
                b"alice:" + ALICE_HASH,
                b"no colon here",
                b"carol:plaintext",
                b"dave:" + ALICE_HASH[:-1],
                b":" + ALICE_HASH,
                b"e ve:" + ALICE_HASH,
                b"alice:" + BOB_HASH,
                b"\xff:" + ALICE_HASH,
                b"frank:$2b$03$" + ALICE_HASH[7:],
                b"gina:$2b$04$" + b"A" * 53,
                b"bob:" + BOB_HASH,
            ]
        )
        hashes, warnings = parse_password_hashes(text, "/etc/pw")
        self.assertEqual(hashes.hashes, {"alice": ALICE_HASH, "bob": BOB_HASH})
        self.assertEqual(
            warnings,
            [
                "/etc/pw line 2: expected user:hash",
                "/etc/pw line 3: the hash for carol is not a bcrypt hash ($2b$...)",
                "/etc/pw line 4: the hash for dave is not a bcrypt hash ($2b$...)",
                "/etc/pw line 5: the user name is empty",
                "/etc/pw line 6: the user name contains spaces or unprintable characters",
                "/etc/pw line 7: alice is listed again; the first line counts",
                "/etc/pw line 8: the user name is not UTF-8",
                "/etc/pw line 9: the hash for frank has cost 3",
                # A salt bcrypt itself would refuse ("Invalid salt"): never handed to it.
                "/etc/pw line 10: the hash for gina is not a bcrypt hash ($2b$...)",
            ],
        )

    def test_older_prefixes_are_read(self) -> None:
        """$2a$ and $2y$ hashes (htpasswd -B, older tools) are bcrypt too."""
        for prefix in (b"$2a$", b"$2y$"):
            hashed = prefix + ALICE_HASH[4:]
            hashes, warnings = parse_password_hashes(b"alice:" + hashed, "pw")
            self.assertEqual((hashes.hashes, warnings), ({"alice": hashed}, []))
            self.assertTrue(bcrypt.checkpw(b"alice's secret", hashed))

    def test_cost_of_an_attempt(self) -> None:
        """A listed user's attempt costs their hash's cost; anyone else's the file's first."""
        hashes, _ = parse_password_hashes(b"bob:" + BOB_HASH + b"\nalice:" + ALICE_HASH, "pw")
        self.assertEqual(hashes.cost("alice"), 4)
        self.assertEqual(hashes.cost("bob"), 5)
        self.assertEqual(hashes.cost("mallory"), 5)
        self.assertEqual(PasswordHashes({}).cost("mallory"), DEFAULT_COST)

    def test_dummy_hash_takes_a_full_computation(self) -> None:
        """The dummy hash is one bcrypt accepts at the cost asked for, and no password matches."""
        dummy = dummy_hash(4)
        self.assertEqual(dummy[:7], b"$2b$04$")
        _, warnings = parse_password_hashes(b"x:" + dummy, "pw")
        self.assertEqual(warnings, [])
        self.assertFalse(bcrypt.checkpw(b"", dummy))
        self.assertFalse(bcrypt.checkpw(b"password", dummy))

    def test_read_afresh_and_warned_each_read(self) -> None:
        """The file is read at each call; its bad lines are logged once per read."""
        path = Path(self.mktemp())
        path.write_bytes(b"alice:" + ALICE_HASH + b"\nbroken\n")
        log = CapturedLog(self)
        first = read_password_hashes(str(path))
        assert first is not None
        self.assertEqual(list(first.hashes), ["alice"])
        path.write_bytes(b"bob:" + BOB_HASH + b"\nbroken\n")
        second = read_password_hashes(str(path))
        assert second is not None
        self.assertEqual(list(second.hashes), ["bob"])
        warned = [line for line in log.lines if "line 2: expected user:hash" in line]
        self.assertEqual(len(warned), 2)

    def test_unreadable_file(self) -> None:
        """A missing file is None and one log line naming it."""
        log = CapturedLog(self)
        self.assertIsNone(read_password_hashes("/nonexistent/passwords"))
        self.assertTrue(
            any("Cannot read password hashes from /nonexistent/passwords" in x for x in log.lines)
        )


class PasswdCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir(parents=True)
        self.path = self.directory / "passwords"

    def run_command(
        self, *argv: str, stdin: bytes = b"", tty_answers: list[str] | None = None
    ) -> tuple[int, str, str]:
        """The command in this process: its status, stdout and stderr."""
        out, err = io.StringIO(), io.StringIO()
        answers = list(tty_answers or [])

        class Terminal(io.BytesIO):
            def isatty(self) -> bool:
                return tty_answers is not None

        status = main(
            list(argv),
            stdin=Terminal(stdin),
            stdout=out,
            stderr=err,
            ask=lambda prompt: answers.pop(0),
        )
        return status, out.getvalue(), err.getvalue()

    def hashes(self) -> dict[str, bytes]:
        parsed, warnings = parse_password_hashes(self.path.read_bytes(), str(self.path))
        self.assertEqual(warnings, [])
        return parsed.hashes

    def test_adds_a_user_from_stdin(self) -> None:
        """Standard input's first line is the password; the file is new, mode 0600."""
        status, out, err = self.run_command(
            str(self.path), "alice", "--cost", "4", stdin=b"correct horse\nignored\n"
        )
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, f"Added alice in {self.path}\n")
        hashed = self.hashes()["alice"]
        self.assertTrue(bcrypt.checkpw(b"correct horse", hashed))
        self.assertEqual(hashed[:7], b"$2b$04$")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_replaces_the_users_line_in_place(self) -> None:
        """Changing a password rewrites that line only; comments and other users stay."""
        self.path.write_bytes(
            b"# the team\nalice:" + ALICE_HASH + b"\nbob:" + BOB_HASH + b"\nalice:" + BOB_HASH
        )
        os.chmod(self.path, 0o644)
        status, out, _ = self.run_command(
            str(self.path), "alice", "--cost", "4", stdin=b"new one\r\n"
        )
        self.assertEqual(status, 0)
        self.assertEqual(out, f"Changed alice in {self.path}\n")
        lines = self.path.read_bytes().splitlines()
        self.assertEqual(len(lines), 3)
        self.assertEqual(lines[0], b"# the team")
        self.assertTrue(lines[1].startswith(b"alice:"))
        self.assertTrue(bcrypt.checkpw(b"new one", lines[1][6:]))
        self.assertEqual(lines[2], b"bob:" + BOB_HASH)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual([p.name for p in self.directory.iterdir()], ["passwords"])

    def test_terminal_asks_twice(self) -> None:
        """On a terminal the password is asked twice; a mismatch changes nothing."""
        status, _, _ = self.run_command(
            str(self.path), "alice", "--cost", "4", tty_answers=["s3cret", "s3cret"]
        )
        self.assertEqual(status, 0)
        self.assertTrue(bcrypt.checkpw(b"s3cret", self.hashes()["alice"]))
        before = self.path.read_bytes()
        status, _, err = self.run_command(
            str(self.path), "alice", "--cost", "4", tty_answers=["one", "two"]
        )
        self.assertEqual((status, err), (1, "rfwd-passwd: the passwords do not match\n"))
        self.assertEqual(self.path.read_bytes(), before)

    def test_refusals_in_one_line(self) -> None:
        """Empty or over-long passwords and unusable names: one line, no file written."""
        cases = [
            (("alice",), b"\n", "the password is empty"),
            (("alice",), b"x" * 73 + b"\n", "the password is longer than bcrypt's 72 bytes"),
            (("al:ice",), b"pw\n", "the user name contains ':'"),
            (("",), b"pw\n", "the user name is empty"),
        ]
        for arguments, stdin, message in cases:
            status, out, err = self.run_command(str(self.path), *arguments, stdin=stdin)
            self.assertEqual((status, out, err), (1, "", f"rfwd-passwd: {message}\n"))
        self.assertFalse(self.path.exists())

    def test_no_password_argument(self) -> None:
        """There is no way to give the password on the command line: an extra word is refused."""
        status, _, err = self.run_command(str(self.path), "alice", "hunter2", stdin=b"pw\n")
        self.assertEqual(status, 2)
        self.assertIn("rfwd-passwd: error: unrecognized arguments: hunter2", err)
        self.assertFalse(self.path.exists())

    def test_delete(self) -> None:
        """--delete removes the user's line and reads no password."""
        self.path.write_bytes(b"alice:" + ALICE_HASH + b"\nbob:" + BOB_HASH + b"\n")
        status, out, _ = self.run_command(str(self.path), "alice", "--delete")
        self.assertEqual((status, out), (0, f"Removed alice from {self.path}\n"))
        self.assertEqual(self.hashes(), {"bob": BOB_HASH})
        status, _, err = self.run_command(str(self.path), "alice", "--delete")
        self.assertEqual((status, err), (1, f"rfwd-passwd: alice has no line in {self.path}\n"))

    def test_unwritable_directory(self) -> None:
        """A file in a directory that does not exist: one line naming it."""
        missing = self.directory / "missing" / "passwords"
        status, _, err = self.run_command(str(missing), "alice", "--cost", "4", stdin=b"pw\n")
        self.assertEqual(status, 1)
        self.assertIn(f"cannot write in {missing.parent}", err)


def config(**fields: object) -> ServerConfig:
    return ServerConfig(host_keys=[new_key()], **fields)  # type: ignore[arg-type]


class AccessListTests(SynchronousTestCase):
    def test_user_patterns(self) -> None:
        """USER patterns: * and ? wildcards over the whole name, case-sensitive, no classes."""
        self.assertTrue(match_user("alice", "10.0.0.1", "alice"))
        self.assertTrue(match_user("alice", "10.0.0.1", "a*"))
        self.assertTrue(match_user("alice", "10.0.0.1", "al?ce"))
        self.assertFalse(match_user("alice", "10.0.0.1", "Alice"))
        self.assertFalse(match_user("alice", "10.0.0.1", "alic"))
        self.assertFalse(match_user("alice", "10.0.0.1", "[a]lice"))
        self.assertTrue(match_user("[a]lice", "10.0.0.1", "[a]lice"))

    def test_user_at_host_patterns(self) -> None:
        """USER@HOST: the address list may hold wildcards, CIDR blocks and negations."""
        self.assertTrue(match_user("alice", "10.0.0.1", "alice@10.0.0.1"))
        self.assertTrue(match_user("alice", "10.0.0.1", "alice@10.0.0.0/8"))
        self.assertTrue(match_user("alice", "10.0.0.1", "*@10.0.0.*"))
        self.assertFalse(match_user("alice", "192.168.1.1", "alice@10.0.0.0/8"))
        self.assertFalse(match_user("alice", "10.0.0.1", "alice@10.0.0.0/8,!10.0.0.1"))
        self.assertTrue(match_user("alice", "10.0.0.2", "alice@10.0.0.0/8,!10.0.0.1"))
        self.assertTrue(match_user("a@b", "::1", "a@b@::1"))

    def test_deny_users_first(self) -> None:
        """DenyUsers is checked before AllowUsers: listed in both is refused."""
        both = config(allow_users=["alice", "bob"], deny_users=["alice@127.0.0.1"])
        self.assertEqual(access_refusal("alice", "127.0.0.1", both), "listed in DenyUsers")
        self.assertIsNone(access_refusal("alice", "10.1.1.1", both))
        self.assertIsNone(access_refusal("bob", "127.0.0.1", both))
        self.assertEqual(access_refusal("carol", "10.1.1.1", both), "not listed in AllowUsers")

    def test_no_lists_allow_everyone(self) -> None:
        """Without lists nobody is refused, and groups are not looked up."""

        def no_lookup(user: str) -> list[str]:
            raise AssertionError("groups looked up without a group list")

        self.assertIsNone(access_refusal("anyone", "127.0.0.1", config(), no_lookup))

    def test_groups(self) -> None:
        """DenyGroups before AllowGroups, over primary and supplementary groups by pattern."""
        groups = {"alice": ["alice", "tunnels"], "bob": ["bob", "wheel"], "carol": ["carol"]}
        lists = config(allow_groups=["tun*", "wheel"], deny_groups=["whe?l"])
        self.assertIsNone(access_refusal("alice", "127.0.0.1", lists, groups.get))
        self.assertEqual(
            access_refusal("bob", "127.0.0.1", lists, groups.get),
            "a group is listed in DenyGroups",
        )
        self.assertEqual(
            access_refusal("carol", "127.0.0.1", lists, groups.get),
            "none of user's groups are listed in AllowGroups",
        )

    def test_non_system_user_has_no_groups(self) -> None:
        """
        A login name that is not a system user has no groups: AllowGroups refuses it, and
        DenyGroups cannot match it.
        """
        self.assertEqual(
            access_refusal("no-such-user-xyz", "127.0.0.1", config(allow_groups=["*"])),
            "not in any group",
        )
        self.assertIsNone(
            access_refusal("no-such-user-xyz", "127.0.0.1", config(deny_groups=["*"]))
        )

    def test_system_groups(self) -> None:
        """The system's group database: root is in gid 0's group, and only DenyGroups stops it."""
        root_group = grp.getgrgid(0).gr_name
        self.assertIsNone(access_refusal("root", "127.0.0.1", config(allow_groups=[root_group])))
        self.assertEqual(
            access_refusal("root", "127.0.0.1", config(deny_groups=[root_group])),
            "a group is listed in DenyGroups",
        )

    def test_methods_offered(self) -> None:
        """publickey, password, keyboard-interactive: each only when its setting is on."""
        self.assertEqual(auth_methods(config()), [b"publickey"])
        self.assertEqual(
            auth_methods(
                config(
                    pubkey_authentication=False,
                    password_authentication=True,
                    kbd_interactive_authentication=True,
                )
            ),
            [b"password", b"keyboard-interactive"],
        )
