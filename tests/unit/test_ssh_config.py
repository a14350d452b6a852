"""
L{twisted_rfwd.protocol.ssh_config}: OpenSSH client configuration read as ssh 9.2 reads it, and
its resolution for rfwd-client (L{twisted_rfwd.client.ssh_config}).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.client.config import HostKeyPolicy
from twisted_rfwd.client.ssh_config import CommandLine, dump, resolve
from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.spec import RemoteForward
from twisted_rfwd.protocol.ssh_config import (
    ACTED,
    KEYWORDS,
    Local,
    Sources,
    SSHConfig,
    evaluate,
    match_pattern,
    match_pattern_list,
    split_line,
)


class SplitLineTests(SynchronousTestCase):
    """How one line is cut into a keyword and arguments."""

    def test_forms(self) -> None:
        """C{Keyword value}, C{Keyword=value}, C{Keyword = value} and leading blanks."""
        for line in ["Port 22", "Port=22", "Port = 22", "  Port\t22  ", "Port =22\r"]:
            self.assertEqual(split_line(line), ("Port", ["22"]), line)

    def test_quotes_and_escapes(self) -> None:
        """Quoted arguments keep their spaces; a backslash escapes quotes, itself and spaces."""
        self.assertEqual(
            split_line('IdentityFile "/a b/c" \'d e\' f\\ g h\\"i'),
            ("IdentityFile", ["/a b/c", "d e", "f g", 'h"i']),
        )

    def test_comments_and_blank(self) -> None:
        """Blank lines and comments are nothing; C{#} in an argument position ends the line."""
        self.assertIsNone(split_line(""))
        self.assertIsNone(split_line("   "))
        self.assertIsNone(split_line("# Port 22"))
        self.assertEqual(split_line("Port 22 # the default"), ("Port", ["22"]))

    def test_errors(self) -> None:
        """A keyword without argument, or an unclosed quote, is an error."""
        error = self.assertRaises(ValueError, split_line, "Port")
        self.assertEqual(str(error), 'no argument after keyword "port"')
        self.assertRaises(ValueError, split_line, "Port=")
        error = self.assertRaises(ValueError, split_line, 'User "alice')
        self.assertEqual(str(error), "invalid quotes")


class PatternTests(SynchronousTestCase):
    """ssh's pattern matching."""

    def test_match_pattern(self) -> None:
        """C{*} matches any run, C{?} one character, everything else itself (case matters)."""
        self.assertTrue(match_pattern("web1.example.com", "*.example.com"))
        self.assertTrue(match_pattern("web1", "web?"))
        self.assertFalse(match_pattern("web12", "web?"))
        self.assertTrue(match_pattern("", "*"))
        self.assertFalse(match_pattern("Web1", "web1"))
        self.assertTrue(match_pattern("a.b", "a.b"))
        self.assertFalse(match_pattern("axb", "a.b"))

    def test_match_pattern_list(self) -> None:
        """Comma lists: 1 on a match, -1 when a negated pattern matches, else 0."""
        self.assertEqual(match_pattern_list("web1", "db*,web*", False), 1)
        self.assertEqual(match_pattern_list("web1", "web*,!web1", False), -1)
        self.assertEqual(match_pattern_list("web1", "!db*", False), 0)
        self.assertEqual(match_pattern_list("web1", "WEB*", True), 1)
        self.assertEqual(match_pattern_list("web1", "WEB*", False), 0)


class ConfigTestCase(SynchronousTestCase):
    """A home directory, a system directory, and files in both."""

    def setUp(self) -> None:
        root = Path(self.mktemp()).resolve()
        self.home = root / "home"
        (self.home / ".ssh").mkdir(parents=True)
        self.etc = root / "etc"
        self.etc.mkdir()
        self.local = Local(
            user="me", home=str(self.home), uid=1000, hostname="box.example.org",
            environ={"KEYS": "/keys"},
        )  # fmt: skip

    def user_file(self, text: str, name: str = "config") -> Path:
        path = self.home / ".ssh" / name
        path.write_text(text)
        return path

    def system_file(self, text: str, name: str = "ssh_config") -> Path:
        path = self.etc / name
        path.write_text(text)
        return path

    def sources(self, config_file: str | None = None) -> Sources:
        return Sources(
            config_file=config_file,
            user_config=str(self.home / ".ssh" / "config"),
            system_config=str(self.etc / "ssh_config"),
            user_dir=str(self.home / ".ssh"),
            system_dir=str(self.etc),
        )

    def evaluate(
        self,
        host: str,
        *options: str,
        config_file: str | None = None,
        seeded: tuple[tuple[str, str], ...] = (),
    ) -> SSHConfig:
        return evaluate(host, options, self.local, self.sources(config_file), seeded)

    def error(self, host: str, *options: str, config_file: str | None = None) -> str:
        return str(
            self.assertRaises(ConfigError, self.evaluate, host, *options, config_file=config_file)
        )


class HostTests(ConfigTestCase):
    """C{Host} blocks."""

    def test_other_remote_forward_forms(self) -> None:
        """RemoteForward with one argument is dynamic (SOCKS); paths are Unix sockets, as ssh."""
        self.user_file(
            "Host t\n  RemoteForward 1080\n  RemoteForward /r.sock localhost:80\n"
            "  RemoteForward 8080 /l.sock\n"
        )
        s = resolve(CommandLine("t"), self.local, self.sources())
        self.assertEqual(
            s.forwards,
            [
                RemoteForward(1080, "", 0, dynamic=True),
                RemoteForward(0, "localhost", 80, listen_path="/r.sock"),
                RemoteForward(8080, "", 0, host_path="/l.sock"),
            ],
        )

    def test_alias(self) -> None:
        """A block for the name given applies; one for another name does not."""
        self.user_file("Host other\n  Port 1\nHost tunnel\n  HostName h.example\n  Port 2\n")
        config = self.evaluate("tunnel")
        self.assertEqual((config.hostname, config.port), ("h.example", 2))
        self.assertEqual(self.evaluate("nothing").port, 22)

    def test_wildcards(self) -> None:
        """C{*} and C{?} patterns; several patterns on one line; C{Host *} for everyone."""
        self.user_file("Host db? *.example.com\n  User a\nHost web*\n  User b\nHost *\n  User c\n")
        self.assertEqual(self.evaluate("db1").user, "a")
        self.assertEqual(self.evaluate("x.example.com").user, "a")
        self.assertEqual(self.evaluate("db12").user, "c")
        self.assertEqual(self.evaluate("web12").user, "b")

    def test_negation(self) -> None:
        """A matching C{!pattern} voids the whole line; alone, it matches nothing (as in ssh)."""
        self.user_file("Host * !secret*\n  Port 2\nHost !other\n  User n\n")
        self.assertEqual(self.evaluate("web").port, 2)
        self.assertEqual(self.evaluate("secret1").port, 22)
        self.assertEqual(self.evaluate("web").user, "me")
        self.assertEqual(self.evaluate("other").user, "me")

    def test_case_sensitive(self) -> None:
        """Host patterns compare with the name as typed, case included."""
        self.user_file("Host Tunnel\n  Port 2\n")
        self.assertEqual(self.evaluate("Tunnel").port, 2)
        self.assertEqual(self.evaluate("tunnel").port, 22)

    def test_first_value_wins_and_accumulation(self) -> None:
        """First value wins; IdentityFile, CertificateFile and RemoteForward add up."""
        self.user_file(
            "Host t\n  Port 2\n  IdentityFile a\n  RemoteForward 1 h:1\n  CertificateFile c1\n"
            "  UserKnownHostsFile k1 k2\nHost *\n  Port 3\n  IdentityFile b\n"
            "  RemoteForward 2 h:2\n  CertificateFile c2\n  UserKnownHostsFile k3\n"
        )
        config = self.evaluate("t")
        self.assertEqual(config.port, 2)
        self.assertEqual([e.value for e in config.entries("IdentityFile")], ["a", "b"])
        self.assertEqual([e.value for e in config.entries("CertificateFile")], ["c1", "c2"])
        self.assertEqual(
            [e.args for e in config.entries("RemoteForward")], [("1", "h:1"), ("2", "h:2")]
        )
        self.assertEqual(config.get("UserKnownHostsFile"), "k1 k2")

    def test_keywords_case_insensitive(self) -> None:
        """Keywords match in any case."""
        self.user_file("HOST t\n  hostNAME=h\n  PORT = 7\n")
        config = self.evaluate("t")
        self.assertEqual((config.hostname, config.port), ("h", 7))


class MatchTests(ConfigTestCase):
    """C{Match} criteria."""

    def test_host_is_the_hostname_so_far(self) -> None:
        """C{Match host} sees C{HostName} (with C{%h}) once set, in any case."""
        self.user_file(
            "Host t\n  HostName %h.Example.COM\nMatch host t.example.com\n  Port 2\n"
            "Match host t\n  User wrong\n"
        )
        config = self.evaluate("t")
        self.assertEqual(config.port, 2)
        self.assertEqual(config.user, "me")

    def test_originalhost(self) -> None:
        """C{Match originalhost} sees the name given, whatever C{HostName} says."""
        self.user_file("Host t\n  HostName other\nMatch originalhost T\n  Port 2\n")
        self.assertEqual(self.evaluate("t").port, 2)

    def test_user_and_localuser(self) -> None:
        """C{Match user} sees the remote user so far; C{localuser} the local one."""
        self.user_file(
            "Host t\n  User tunnel\nMatch user tun*\n  Port 2\nMatch localuser me\n  "
            "ConnectTimeout 9\nMatch localuser other\n  BatchMode yes\n"
        )
        config = self.evaluate("t")
        self.assertEqual(config.port, 2)
        self.assertEqual(config.get("ConnectTimeout"), "9")
        self.assertIsNone(config.get("BatchMode"))
        self.assertEqual(self.evaluate("t", seeded=(("User", "x"),)).port, 22)

    def test_all_negation_and_conjunction(self) -> None:
        """C{all} matches; C{!} negates a criterion; every criterion must hold."""
        self.user_file(
            "Match host a* !user root\n  Port 2\nMatch !host b*\n  User nb\n"
            "Match host a* user root\n  ConnectTimeout 5\nMatch all\n  BatchMode yes\n"
        )
        config = self.evaluate("abc")
        self.assertEqual(config.port, 2)
        self.assertEqual(config.user, "nb")
        self.assertIsNone(config.get("ConnectTimeout"))
        self.assertEqual(config.get("BatchMode"), "yes")
        self.assertEqual(self.evaluate("b1").user, "me")

    def test_exec_refused(self) -> None:
        """C{exec} is refused once the criteria before it hold (ssh would run the command)."""
        self.user_file('Match host t exec "true"\n  Port 2\n')
        self.assertEqual(self.evaluate("other").port, 22)
        self.assertEqual(
            self.error("t"),
            f"{self.home}/.ssh/config line 1: Match exec is not supported: "
            "rfwd-client never runs commands from its configuration",
        )

    def test_final_second_reading(self) -> None:
        """
        C{Match final} and C{canonical} hold only in the second reading that C{final} asks
        for, where C{Host} compares with the settled host name and the first values stay.
        """
        self.user_file(
            "Host t\n  HostName real.example\n  User first\nMatch final\n  Port 2\n"
            "  User second\nHost real.example\n  ConnectTimeout 4\nMatch !final\n"
            "  BatchMode yes\nMatch canonical\n  ConnectionAttempts 3\n"
        )
        config = self.evaluate("t")
        self.assertEqual((config.hostname, config.port, config.user), ("real.example", 2, "first"))
        self.assertEqual(config.get("ConnectTimeout"), "4")
        self.assertEqual(config.get("BatchMode"), "yes")
        self.assertEqual(config.get("ConnectionAttempts"), "3")
        self.user_file("Match canonical\n  Port 2\nHost real.example\n  Port 3\n")
        self.assertEqual(self.evaluate("t").port, 22)

    def test_bad_match_lines(self) -> None:
        """Errors: C{all} combined, a criterion without patterns, an unknown criterion."""
        path = f"{self.home}/.ssh/config"
        cases = {
            "Match all host x\n": "'all' cannot be combined with other Match attributes",
            "Match host\n": "Missing Match criteria for host",
            "Match address 10.0.0.1\n": "Unsupported Match attribute address",
        }
        for text, message in cases.items():
            self.user_file(text)
            self.assertEqual(self.error("t"), f"{path} line 1: {message}")


class IncludeTests(ConfigTestCase):
    """C{Include}."""

    def test_relative_to_dot_ssh_sorted(self) -> None:
        """A relative glob in a user file is read from ~/.ssh, in sorted order, in place."""
        (self.home / ".ssh" / "conf.d").mkdir()
        self.user_file("Host t\n  User b\n", "conf.d/20-b.conf")
        self.user_file("Host t\n  User a\n  Port 3\n", "conf.d/10-a.conf")
        self.user_file("Port 9\nInclude conf.d/*.conf\n")
        config = self.evaluate("t")
        self.assertEqual((config.user, config.port), ("a", 9))

    def test_home_and_system_paths(self) -> None:
        """C{~} in user files is the home; a relative path in the system file is in /etc/ssh."""
        self.user_file("Port 4\n", "extra")
        self.user_file("Include ~/.ssh/extra\n")
        self.system_file("User sys\n", "sys.conf")
        self.system_file("Include sys.conf\n")
        config = self.evaluate("t")
        self.assertEqual((config.port, config.user), (4, "sys"))
        self.system_file("Include ~/.ssh/extra\n")
        self.assertIn("line 1: bad include path ~/.ssh/extra", self.error("t"))

    def test_inactive_block_and_match_scope(self) -> None:
        """An Include in a block that does not apply adds nothing; its Matches end with it."""
        self.user_file("Host *\n  Port 5\nMatch all\n  ConnectTimeout 3\n", "inc")
        self.user_file("Host other\nInclude inc\nHost t\n  User u\n")
        config = self.evaluate("t")
        self.assertEqual((config.port, config.user), (22, "u"))
        self.assertIsNone(config.get("ConnectTimeout"))
        self.user_file("Host nothing\n  Port 6\n", "inc")
        self.user_file("Host t\nInclude inc\n  User v\n")
        self.assertEqual(self.evaluate("t").user, "v")

    def test_errors_inside_included_files(self) -> None:
        """Errors name the included file and its line; a glob matching nothing is fine."""
        self.user_file("\n\nPort zero\n", "bad")
        self.user_file("Include nothing-*\nInclude bad\n")
        self.assertEqual(self.error("t"), f"{self.home}/.ssh/bad line 3: Bad port 'zero'.")

    def test_depth(self) -> None:
        """An Include loop ends with an error."""
        self.user_file("Include config\n")
        self.assertIn("too many recursive configuration includes", self.error("t"))


class TokenTests(ConfigTestCase):
    """C{%} tokens, C{~} and C{${VAR}}."""

    def test_hostname(self) -> None:
        """HostName takes %h and %%; the result is lower-cased like ssh's (not addresses)."""
        self.user_file("Host t\n  HostName %h.%%.EXAMPLE\n")
        self.assertEqual(self.evaluate("t").hostname, "t.%.example")
        self.user_file("Host t\n  HostName %p\n")
        config = self.evaluate("t")
        error = self.assertRaises(ConfigError, lambda: config.hostname)
        self.assertIn("line 2: HostName: unknown token %p", str(error))
        self.user_file("Host t\n  HostName FE80::1\n")
        self.assertEqual(self.evaluate("t").hostname, "FE80::1")

    def test_all_tokens(self) -> None:
        """IdentityFile-like keywords take ssh's whole set, as ssh computes each."""
        self.user_file(
            "Host t\n  HostName H.example\n  Port 2200\n  User bob\n  HostKeyAlias alias\n"
            "  IdentityFile ~/%C/%d/%h/%i/%k/%L/%l/%n/%p/%r/%u/%%/${KEYS}\n"
        )
        config = self.evaluate("t")
        entry = config.entries("IdentityFile")[0]
        digest = hashlib.sha1(b"box.example.orgh.example2200bob").hexdigest()
        home = str(self.home)
        self.assertEqual(
            config.expand("IdentityFile", entry),
            f"{home}/{digest}/{home}/h.example/1000/alias/box/box.example.org/t/2200/bob/me/%"
            "//keys",
        )

    def test_bad_tokens(self) -> None:
        """An unknown token, a lone %, an unset variable: errors at the line."""
        for value, message in [
            ("~/%z", "unknown token %z"),
            ("/a%", "a lone '%' at the end"),
            ("${NOPE}/k", "environment variable NOPE is not set"),
        ]:
            self.user_file(f"IdentityFile {value}\n")
            config = self.evaluate("t")
            error = self.assertRaises(
                ConfigError, config.expand, "IdentityFile", config.entries("IdentityFile")[0]
            )
            self.assertEqual(str(error), f"{self.home}/.ssh/config line 1: IdentityFile: {message}")


class SourceTests(ConfigTestCase):
    """Which files are read, and the command line's place."""

    def test_user_file_then_system_file(self) -> None:
        """~/.ssh/config first, then the system file."""
        self.user_file("Port 1\n")
        self.system_file("Port 2\nUser sys\n")
        config = self.evaluate("t")
        self.assertEqual((config.port, config.user), (1, "sys"))

    def test_dash_f_replaces_both(self) -> None:
        """C{-F FILE} is the only file read; C{-F none} reads none; a missing -F is an error."""
        self.user_file("Port 1\n")
        self.system_file("User sys\n")
        other = self.user_file("Port 3\n", "other")
        config = self.evaluate("t", config_file=str(other))
        self.assertEqual((config.port, config.user), (3, "me"))
        config = self.evaluate("t", config_file="none")
        self.assertEqual((config.port, config.user), (22, "me"))
        missing = str(self.home / "missing")
        self.assertEqual(
            self.error("t", config_file=missing),
            f"Can't open user config file {missing}: No such file or directory",
        )

    def test_precedence(self) -> None:
        """Seeded flags, then -o, then files: the first value wins."""
        self.user_file("Host t\n  Port 1\n  User f\n  HostName file\n  IdentityFile f\n")
        config = self.evaluate(
            "t", "Port=2", "User o", "IdentityFile=o", seeded=(("User", "flag"),)
        )
        self.assertEqual((config.port, config.user, config.hostname), (2, "flag", "file"))
        self.assertEqual([e.value for e in config.entries("IdentityFile")], ["o", "f"])
        self.assertEqual(self.evaluate("t", "HostName=cmd").hostname, "cmd")

    def test_command_line_refuses_blocks(self) -> None:
        """C{-o Host}, C{Match} and C{Include} are errors, as in ssh."""
        self.assertEqual(
            self.error("t", "Host x"),
            "command-line line 0: Host is not supported as a command-line option",
        )

    def test_permissions(self) -> None:
        """A user file others can write is refused, as ssh does."""
        path = self.user_file("Port 1\n")
        os.chmod(path, 0o666)
        self.assertEqual(self.error("t"), f"Bad owner or permissions on {path}")


class ErrorTests(ConfigTestCase):
    """C{FILE line N: reason} for what ssh would refuse."""

    def test_unknown_keyword(self) -> None:
        """Unknown keywords are errors, named as written; -o ones on line 0 of command-line."""
        self.user_file("Port 2\n  Frobnicate yes\n")
        self.assertEqual(
            self.error("t"), f"{self.home}/.ssh/config line 2: unsupported option 'Frobnicate'"
        )
        self.assertEqual(
            self.error("t", "Frob=1"), "command-line line 0: unsupported option 'Frob'"
        )

    def test_ignore_unknown(self) -> None:
        """IgnoreUnknown's patterns let unknown keywords pass, from its line on."""
        self.user_file("IgnoreUnknown UseKeychain,Foo*\nUseKeychain yes\nFooBar 1\nPort 3\n")
        config = self.evaluate("t")
        self.assertEqual(config.port, 3)
        self.assertEqual([e.args[0] for e in config.ignored], ["UseKeychain", "FooBar"])
        self.user_file("UseKeychain yes\nIgnoreUnknown UseKeychain\n")
        self.assertIn("line 1: unsupported option 'UseKeychain'", self.error("t"))

    def test_known_but_ignored(self) -> None:
        """Keywords ssh knows and rfwd-client does not use are recorded, not refused."""
        self.user_file("Compression yes\nForwardAgent yes\nHost t\n  ControlMaster auto\n")
        config = self.evaluate("t")
        self.assertEqual(
            [name for name, _ in config.ignored_names],
            ["Compression", "ForwardAgent", "ControlMaster"],
        )

    def test_bad_values(self) -> None:
        """Bad values of the keywords rfwd-client reads, even in blocks that do not apply."""
        cases = {
            "Port 0": "Bad port '0'.",
            "Port 1 2": "keyword Port extra arguments at end of line",
            "ExitOnForwardFailure maybe": "ExitOnForwardFailure must be yes or no, not 'maybe'",
            "StrictHostKeyChecking sometimes": "StrictHostKeyChecking must be yes, accept-new",
            "ConnectTimeout soon": "ConnectTimeout must be a number of seconds",
            "ServerAliveCountMax -1": "ServerAliveCountMax must be a number",
            "ConnectionAttempts 0": "ConnectionAttempts must be 1 or more",
            "Ciphers aes128-xyz": "Bad Ciphers 'aes128-xyz'",
            "RekeyLimit 1": "RekeyLimit: the size must be at least 16 bytes",
            "RemoteForward 8080 host": "Bad remote forwarding specification '8080:host'",
            "LogLevel loud": "unsupported log level 'loud'",
            "AddressFamily ipx": "AddressFamily must be any, inet or inet6",
            "UserKnownHostsFile a none": 'keyword UserKnownHostsFile "none" argument must',
            "AddKeysToAgent sometimes": "AddKeysToAgent: unsupported option",
        }
        for line, message in cases.items():
            self.user_file(f"Host elsewhere\n  {line}\n")
            error = self.error("t")
            self.assertTrue(
                error.startswith(f"{self.home}/.ssh/config line 2: {message}"), (line, error)
            )
        for line in ["AddKeysToAgent confirm 5m", "AddKeysToAgent 1h", "ConnectTimeout none"]:
            self.user_file(f"{line}\n")
            self.evaluate("t")

    def test_keyword_list(self) -> None:
        """Every keyword rfwd-client acts on is one of ssh's."""
        self.assertLessEqual(ACTED, set(KEYWORDS.values()))
        self.assertEqual(KEYWORDS["pubkeyacceptedkeytypes"], "PubkeyAcceptedAlgorithms")


class ResolveTests(ConfigTestCase):
    """L{resolve} and L{dump}: rfwd-client's settings from the command line and the files."""

    def resolve(self, destination: str, **kwargs: object) -> object:
        return resolve(CommandLine(destination, **kwargs), self.local, self.sources())  # type: ignore[arg-type]

    def test_alias(self) -> None:
        """A Host alias gives everything a tunnel needs; command-line flags win."""
        self.user_file(
            "Host tunnel\n  HostName Hostb.example\n  Port 2022\n  User tun\n"
            "  IdentityFile ~/.ssh/k_%h\n  RemoteForward 8080 localhost:80\n"
            "  StrictHostKeyChecking accept-new\n  ServerAliveInterval 1m\n"
            "  UserKnownHostsFile ~/kh_%n\n  Ciphers ^aes256-ctr,aes128-cbc\n"
        )
        s = resolve(CommandLine("tunnel"), self.local, self.sources())
        self.assertEqual((s.host, s.port, s.user), ("hostb.example", 2022, "tun"))
        self.assertEqual(s.forwards, [RemoteForward(8080, "localhost", 80)])
        self.assertEqual(s.identity_files[0].path, f"{self.home}/.ssh/k_hostb.example")
        self.assertFalse(s.identity_files[0].required)
        self.assertIs(s.strict_host_key_checking, HostKeyPolicy.ACCEPT_NEW)
        self.assertEqual(s.server_alive_interval, 60.0)
        self.assertEqual(s.user_known_hosts, [f"{self.home}/kh_tunnel"])
        self.assertEqual(s.algorithms["ciphers"][0], b"aes256-ctr")
        self.assertNotIn(b"aes128-cbc", s.algorithms["ciphers"])
        flags = resolve(
            CommandLine("alice@tunnel", port=1, identities=["/k"], forwards=["1:h:1"]),
            self.local,
            self.sources(),
        )
        self.assertEqual((flags.port, flags.user), (1, "alice"))
        self.assertEqual(flags.identity_files[0].path, "/k")
        self.assertTrue(flags.identity_files[0].required)
        self.assertEqual(flags.forwards[0], RemoteForward(1, "h", 1))

    def test_dump(self) -> None:
        """-G's lines: ssh's keywords and spellings, rfwd-client's values and defaults."""
        self.user_file(
            "Host t\n  RemoteForward [::1]:0 [::1]:22\n  AddKeysToAgent confirm 5m\n"
            "  StrictHostKeyChecking no\n  BindAddress 127.0.0.1\n"
        )
        from twisted_rfwd.tap.client import _defaults

        s = resolve(CommandLine("t"), self.local, self.sources())
        lines = dump(s, _defaults())
        self.assertEqual(lines[:4], ["host t", "user me", "hostname t", "port 22"])
        for expected in [
            "stricthostkeychecking false",
            "serveraliveinterval 15",
            "connecttimeout 30",
            "rekeylimit 1073741824 3600",
            "remoteforward [::1]:0 [::1]:22",
            "addkeystoagent confirm 300",
            "bindaddress 127.0.0.1",
            "identityfile ~/.ssh/id_ed25519",
            "globalknownhostsfile none",
            "loglevel INFO",
        ]:
            self.assertIn(expected, lines)

    def test_accumulated_values_once(self) -> None:
        """A key file or forward named twice is kept once, as ssh does; -R and the file too."""
        self.user_file(
            "Host t\n  IdentityFile a\n  RemoteForward 1 h:1\nHost *\n  IdentityFile a\n"
            "  RemoteForward 1 h:1\n"
        )
        s = resolve(CommandLine("t", forwards=["1:h:1"]), self.local, self.sources())
        self.assertEqual([i.shown for i in s.identity_files], ["a"])
        self.assertEqual(s.forwards, [RemoteForward(1, "h", 1)])
