"""
rfwd-client and ssh_config, as real processes: a table of configuration files through OpenSSH's
C{ssh -G} and C{rfwd-client -G}, compared line by line; and a tunnel set up from nothing but a
Host alias, against rfwd-server and against OpenSSH's sshd.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.support.apps import start_app_server, wait_until_echo
from tests.support.pairs import Keys, make_keys, start_rfwd_server, start_sshd
from tests.support.processes import (
    ChildProcess,
    free_port,
    openssh_binary,
    plugin_env,
    spawn,
    twistd_argv,
)
from twisted_rfwd.protocol.algorithms import CIPHERS, KEY_EXCHANGES, MACS, PUBLIC_KEY_ALGORITHMS


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


def _names(algorithms: list[bytes]) -> str:
    return ",".join(a.decode() for a in algorithms)


# Appended to every file of the table: pins the settings whose defaults differ on purpose
# (rfwd-client keeps the link alive and times out by default, re-keys after 1G or 1h, offers
# only what it implements, and reads fewer default files), so that every line can be compared.
PINNED = f"""
Host *
  StrictHostKeyChecking yes
  ServerAliveInterval 15
  ConnectTimeout 30
  RekeyLimit 1G 1h
  IdentityFile ~/.ssh/id_default
  UserKnownHostsFile ~/.ssh/known_hosts
  GlobalKnownHostsFile /etc/ssh/ssh_known_hosts
  Ciphers {_names(CIPHERS)}
  MACs {_names(MACS)}
  KexAlgorithms {_names([k for k in KEY_EXCHANGES if k != b"mlkem768x25519-sha256"])}
  HostKeyAlgorithms {_names(PUBLIC_KEY_ALGORITHMS)}
  PubkeyAcceptedAlgorithms {_names(PUBLIC_KEY_ALGORITHMS)}
"""

ALIAS = """
Host tunnelhost
  HostName %h.Example.com
  Port 2022
  User tun
  IdentityFile ~/.ssh/tunnel_%r_%h_%p_%u_%n_%d_%l_%L_%C_%i_%k_%%
  CertificateFile ~/.ssh/cert-%h
  IdentitiesOnly yes
  IdentityAgent ~/agent-%u-%C
  AddKeysToAgent confirm 5m
  RemoteForward 8080 localhost:80
  RemoteForward [::1]:0 [::1]:22
  RemoteForward 127.0.0.1:9000 host:9
  ExitOnForwardFailure yes
  ServerAliveInterval 1m
  ServerAliveCountMax 5
  ConnectTimeout 10s
  ConnectionAttempts 3
  StrictHostKeyChecking accept-new
  UserKnownHostsFile ~/kh_%h_%p %d/kh2
  GlobalKnownHostsFile /etc/gkh_%h
  HashKnownHosts yes
  CheckHostIP yes
  Ciphers aes256-ctr,aes128-gcm@openssh.com
  MACs hmac-sha2-512,hmac-sha2-256-etm@openssh.com
  KexAlgorithms ecdh-sha2-nistp384,curve25519-sha256
  HostKeyAlgorithms ssh-ed25519,rsa-sha2-256
  PubkeyAcceptedAlgorithms ssh-ed25519,rsa-sha2-512
  RekeyLimit 512M 30m
  BatchMode yes
  AddressFamily inet
  BindAddress 127.0.0.1
  LogLevel DEBUG2
"""

PATTERNS = """
Host db? *.example.com
  Port 1001
Host web* !web3
  Port 1002
Host !nomatch
  Port 1003
Host *
  User everyone
"""

MATCH = """
Host t
  HostName T.Example.COM
Match host t.example.com user bob
  Port 2001
Match originalhost t !localuser nobody
  ConnectTimeout 7
Match localuser nobody
  ServerAliveCountMax 9
Match !host *.example.com
  ServerAliveCountMax 8
Match all
  BatchMode yes
"""

FINAL = """
Host t
  HostName real.example
  User first
Match final
  Port 2
  User second
Host real.example
  ConnectTimeout 4
Match !final
  BatchMode yes
Match canonical
  ConnectionAttempts 3
"""

PRECEDENCE = """
Host t
  Port 1
  User f
  HostName file.example
  IdentityFile ~/.ssh/from_file
"""

IGNORED = """
IgnoreUnknown UseKeychain,Frob*
UseKeychain yes
FrobNicate 1
Compression yes
ForwardAgent yes
Host t
  ControlMaster auto
  Port 2222
"""


class ConfigComparisonTests(TestCase):
    """The same files through C{ssh -G} and C{rfwd-client -G}: the same lines."""

    timeout = 120

    def setUp(self) -> None:
        self.ssh = openssh_binary("ssh")
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        # ssh expands ~ and %d from the password database, rfwd-client from $HOME: the same here.
        entry = pwd.getpwuid(os.getuid())
        self.env = {
            **plugin_env(),
            "HOME": entry.pw_dir,
            "USER": entry.pw_name,
            "LOGNAME": entry.pw_name,
            "SSH_AUTH_SOCK": "",
        }

    def write(self, text: str, name: str = "config") -> str:
        path = self.directory / name
        path.write_text(text)
        return str(path)

    async def both(self, config: str, *arguments: str) -> tuple[ChildProcess, ChildProcess]:
        r = reactor()
        ssh = spawn(self, r, "ssh", [self.ssh, "-G", "-F", config, *arguments], env=self.env)
        rfwd = spawn(
            self, r, "rfwd-client", twistd_argv("rfwd-client", "-G", "-F", config, *arguments),
            env=self.env,
        )  # fmt: skip
        await defer.gatherResults([ssh.wait_ended(60), rfwd.wait_ended(60)])
        return ssh, rfwd

    async def compare(self, text: str, *arguments: str) -> dict[str, list[str]]:
        """Both print the same values for every keyword rfwd-client prints."""
        ssh, rfwd = await self.both(self.write(text + PINNED), *arguments)
        self.assertEqual((ssh.exit_code, rfwd.exit_code), (0, 0), rfwd.output())
        ours = _keywords(rfwd.lines)
        theirs = _keywords(ssh.lines)
        self.assertGreater(len(ours), 25, rfwd.output())
        for keyword, values in ours.items():
            self.assertEqual(values, theirs.get(keyword), f"{keyword} for {arguments}")
        return ours

    async def test_alias_every_keyword_and_token(self) -> None:
        """A Host alias setting every keyword rfwd-client reads, with every token."""
        ours = await self.compare(ALIAS, "tunnelhost")
        self.assertEqual(ours["hostname"], ["tunnelhost.example.com"])
        self.assertEqual(len(ours["remoteforward"]), 3)

    async def test_host_patterns(self) -> None:
        """Wildcards, several patterns, C{!} on a line with others, and C{!} alone."""
        ports = {}
        for host in ["db1", "x.example.com", "db12", "web1", "web3", "nomatch"]:
            ours = await self.compare(PATTERNS, host)
            ports[host] = ours["port"]
        self.assertEqual(ports["web1"], ["1002"])
        self.assertEqual(ports["web3"], ["22"])

    async def test_match(self) -> None:
        """C{Match host} (after HostName), C{originalhost}, C{user}, C{localuser}, C{all}, C{!}."""
        ours = await self.compare(MATCH, "-l", "bob", "t")
        self.assertEqual(ours["port"], ["2001"])
        self.assertEqual(ours["connecttimeout"], ["7"])
        await self.compare(MATCH, "t")

    async def test_match_final(self) -> None:
        """C{Match final} and C{canonical}: a second reading, Host against the settled name."""
        ours = await self.compare(FINAL, "t")
        self.assertEqual((ours["port"], ours["batchmode"]), (["2"], ["yes"]))

    async def test_include(self) -> None:
        """C{Include} with a glob, in sorted order, and one inside a block that does not apply."""
        included = self.directory / "conf.d"
        included.mkdir()
        (included / "20-b.conf").write_text("Host t\n  User b\n  Port 2\n")
        (included / "10-a.conf").write_text("Host t\n  User a\nMatch all\n  BatchMode yes\n")
        (self.directory / "never.conf").write_text("Host *\n  ConnectionAttempts 7\n")
        text = f"Host other\nInclude {self.directory}/never.conf\nHost *\n"
        text += f"Include {included}/*.conf\n"
        ours = await self.compare(text, "t")
        self.assertEqual((ours["user"], ours["port"]), (["a"], ["2"]))

    async def test_command_line_precedence(self) -> None:
        """-p, -l, user@, -o and -i come before the file."""
        await self.compare(PRECEDENCE, "t")
        ours = await self.compare(
            PRECEDENCE, "-p", "3", "-o", "Port=4", "-o", "HostName=cmd.example", "b@t"
        )
        self.assertEqual((ours["port"], ours["user"]), (["3"], ["b"]))
        key = self.write("", "key")  # ssh drops a missing -i file; rfwd-client refuses it
        await self.compare(PRECEDENCE, "-o", "User=o", "-i", key, "-o", "IdentityFile=/k2", "t")

    async def test_ignored_keywords(self) -> None:
        """IgnoreUnknown, and keywords ssh knows that rfwd-client does not use."""
        ours = await self.compare(IGNORED, "t")
        self.assertEqual(ours["port"], ["2222"])

    async def test_errors_name_file_and_line(self) -> None:
        """A bad value and an unknown keyword: both refuse, naming the file and the line."""
        for text, theirs, ours in [
            ("Host t\n  Port 0\n", " line 2: Bad port '0'.", " line 2: Bad port '0'."),
            (
                "Port 22\nFrobnicate yes\n",
                ": line 2: Bad configuration option: frobnicate",
                " line 2: unsupported option 'Frobnicate'",
            ),
        ]:
            config = self.write(text, "bad")
            ssh, rfwd = await self.both(config, "t")
            self.assertEqual(ssh.exit_code, 255)
            self.assertNotEqual(rfwd.exit_code, 0)
            self.assertIn(config + theirs, ssh.output())
            self.assertIn(config + ours, rfwd.output())
            self.assertNotIn("Traceback", rfwd.output())

    async def test_defaults_that_agree(self) -> None:
        """Without any file (C{-F none}) the defaults both share print the same."""
        ssh, rfwd = await self.both("none", "somehost")
        ours, theirs = _keywords(rfwd.lines), _keywords(ssh.lines)
        for keyword in [
            "host", "user", "hostname", "port", "addressfamily", "batchmode", "checkhostip",
            "exitonforwardfailure", "hashknownhosts", "identitiesonly", "connectionattempts",
            "serveralivecountmax", "loglevel", "addkeystoagent",
        ]:  # fmt: skip
            self.assertEqual(ours[keyword], theirs[keyword], keyword)


def _keywords(lines: list[str]) -> dict[str, list[str]]:
    """C{keyword value} lines, by keyword, in order."""
    found: dict[str, list[str]] = {}
    for line in lines:
        keyword, _, value = line.partition(" ")
        if keyword.isalnum() and keyword.islower():
            found.setdefault(keyword, []).append(value)
    return found


class AliasTunnelTests(TestCase):
    """C{twistd -n rfwd-client tunnelhost} does what C{ssh -N tunnelhost} does."""

    timeout = 120

    def alias(self, keys: Keys, port: int, forward_port: int, app_port: int) -> str:
        return (
            "Host tunnelhost\n"
            "  HostName 127.0.0.1\n"
            f"  Port {port}\n"
            f"  User {keys.user}\n"
            f"  IdentityFile {keys.user_key}\n"
            "  IdentitiesOnly yes\n"
            "  StrictHostKeyChecking accept-new\n"
            f"  UserKnownHostsFile {keys.workdir}/known_hosts_alias\n"
            f"  RemoteForward {forward_port} 127.0.0.1:{app_port}\n"
            "  ExitOnForwardFailure yes\n"
            "  ServerAliveInterval 5\n"
        )

    async def tunnel(self, keys: Keys, port: int, *, use_home: bool) -> None:
        r = reactor()
        _, listening = await start_app_server(r)
        self.addCleanup(listening.stopListening)
        forward_port = free_port()
        text = self.alias(keys, port, forward_port, listening.getHost().port)  # type: ignore[attr-defined]
        home = keys.workdir / "home"
        (home / ".ssh").mkdir(parents=True)
        arguments = ["tunnelhost"]
        if use_home:
            (home / ".ssh" / "config").write_text(text)
        else:
            config = keys.workdir / "tunnel_config"
            config.write_text(text)
            arguments = ["-F", str(config), *arguments]
        env = {**plugin_env(), "HOME": str(home), "SSH_AUTH_SOCK": ""}
        client = spawn(self, r, "rfwd-client", twistd_argv("rfwd-client", *arguments), env=env)
        await wait_until_echo(r, forward_port, deadline=60)
        self.assertFalse(client.ended, client.output())

    async def test_against_rfwd_server_from_home_config(self) -> None:
        """~/.ssh/config's Host alias alone sets up a working forward through rfwd-server."""
        keys = make_keys(Path(self.mktemp()))
        _, port = await start_rfwd_server(self, reactor(), keys)
        await self.tunnel(keys, port, use_home=True)

    async def test_against_sshd_with_dash_f(self) -> None:
        """The same alias in a C{-F} file sets up a working forward through OpenSSH's sshd."""
        keys = make_keys(Path(self.mktemp()))
        _, port = await start_sshd(self, reactor(), keys)
        await self.tunnel(keys, port, use_home=False)
