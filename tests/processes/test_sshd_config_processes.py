"""
rfwd-server's configuration file against OpenSSH's: a table of files run through
C{sshd -T -C ... -f FILE} and C{rfwd-server -T -C ... --config FILE}, compared line by line for
the keywords both act on; and a real rfwd-server started with C{--config}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from harness.openssh import prepare_sshd
from harness.plugins import SERVER_LISTENING
from tests.support.pairs import Keys, make_keys, start_rfwd_client
from tests.support.processes import (
    ChildProcess,
    free_port,
    openssh_binary,
    plugin_env,
    spawn,
    twistd_argv,
)


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


# The -T keywords both servers act on and print the same way, for the values used below.
COMPARED = frozenset(
    [
        "port", "listenaddress", "logingracetime", "maxauthtries", "maxsessions",
        "clientaliveinterval", "clientalivecountmax", "pubkeyauthentication",
        "passwordauthentication", "kbdinteractiveauthentication", "gatewayports",
        "allowtcpforwarding", "ciphers", "macs", "banner", "kexalgorithms", "loglevel",
        "authorizedkeysfile", "hostkey", "allowusers", "denyusers", "allowgroups", "denygroups",
        "maxstartups", "persourcemaxstartups", "rekeylimit", "permitlisten",
    ]
)  # fmt: skip


@dataclass
class Case:
    """A configuration (C{{host_key}} and C{{dir}} filled in), extra files, and -C specs."""

    name: str
    text: str
    specs: list[str]
    files: dict[str, str] = field(default_factory=dict)


CASES = [
    Case(
        "every keyword, first value wins, lists add up",
        """\
HostKey {host_key}
Port 2022
Port 2023
ListenAddress 127.0.0.1
ListenAddress [::1]:2400
GatewayPorts clientspecified
GatewayPorts yes
MaxSessions 4
MaxSessions 8
AllowUsers alice bob
AllowUsers carol
DenyUsers mallory*
AllowGroups root staff
DenyGroups nogroup
PermitListen 8080 localhost:9000 [::1]:9001
PermitListen 1
LoginGraceTime 1m30s
RekeyLimit 512M 30m
Ciphers aes128-ctr,aes256-gcm@openssh.com
MACs hmac-sha2-512
KexAlgorithms ecdh-sha2-nistp256
MaxStartups 5:50:20
PerSourceMaxStartups 3
LogLevel verbose
Banner "{dir}/issue net"
AuthorizedKeysFile {dir}/keys/%u
ClientAliveInterval 30
ClientAliveCountMax 5
pubkeyauthentication=no
PasswordAuthentication = yes
KbdInteractiveAuthentication no  # a comment
AllowTcpForwarding no
MaxAuthTries 3
""",
        [""],
    ),
    Case(
        "Match User: list and negation",
        """\
HostKey {host_key}
GatewayPorts no
Match User alice,!bob*,carol
  GatewayPorts clientspecified
  MaxSessions 2
""",
        ["user=alice", "user=bobby", "user=dave"],
    ),
    Case(
        "Match Group: the system's groups, negation",
        """\
HostKey {host_key}
Match Group root,!nogroup
  MaxAuthTries 2
Match Group nogroup
  MaxAuthTries 4
""",
        ["user=root", "user=nobody"],
    ),
    Case(
        "Match Address: CIDR, wildcard, negation",
        """\
HostKey {host_key}
ClientAliveInterval 20
Match Address 192.0.2.0/24,!192.0.2.7,198.51.100.*
  PermitListen 8000
  ClientAliveInterval 5
""",
        ["addr=192.0.2.1", "addr=192.0.2.7", "addr=198.51.100.3", "addr=2001:db8::1"],
    ),
    Case(
        "Match LocalAddress and LocalPort together, Host",
        """\
HostKey {host_key}
Match LocalAddress 127.0.0.0/8 LocalPort 2022
  AllowTcpForwarding no
Match Host *.example.com,!bad.example.com
  Banner none
  ClientAliveCountMax 9
""",
        [
            "laddr=127.0.0.1,lport=2022",
            "laddr=127.0.0.1,lport=2023,host=a.example.com",
            "laddr=10.0.0.1,lport=2022,host=bad.example.com",
        ],
    ),
    Case(
        "Include with a glob, Match state across files, first matching value wins",
        """\
HostKey {host_key}
Include {dir}/conf.d/*.conf
MaxAuthTries 5
Match User alice
  MaxSessions 3
  AllowUsers m1
Match All
  MaxSessions 5
  AllowUsers m2
""",
        ["user=alice", "user=bob"],
        {
            "conf.d/20-match.conf": "Match User bob\n  GatewayPorts yes\n",
            "conf.d/10-global.conf": "MaxAuthTries 2\nLoginGraceTime 30\n",
            "conf.d/ignored.txt": "NotAKeyword at all\n",
        },
    ),
]


def compared_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.split(" ", 1)[0] in COMPARED]


class ComparisonTests(TestCase):
    """Each file of L{CASES}, through sshd -T and rfwd-server -T, for each of its -C specs."""

    timeout = 120
    maxDiff = None

    async def run_both(self, config: Path, spec: str, keywords: set[str]) -> None:
        sshd = openssh_binary("sshd")
        prepare_sshd()
        test = ["-C", spec] if spec else []
        ssh = spawn(self, reactor(), "sshd -T", [sshd, "-T", *test, "-f", str(config)])
        rfwd = spawn(
            self,
            reactor(),
            "rfwd-server -T",
            twistd_argv("rfwd-server", "-T", *test, "--config", str(config)),
            env=plugin_env(),
        )
        await ssh.wait_ended(30)
        await rfwd.wait_ended(60)
        self.assertEqual(
            (ssh.exit_code, rfwd.exit_code), (0, 0), f"{ssh.output()}\n{rfwd.output()}"
        )
        theirs = [line for line in compared_lines(ssh.output(1000)) if line.split()[0] in keywords]
        ours = [line for line in compared_lines(rfwd.output(1000)) if line.split()[0] in keywords]
        self.assertTrue(theirs, f"nothing to compare for {spec!r}")
        self.assertEqual(ours, theirs, f"-C {spec!r} of {config.read_text()}")

    async def test_table(self) -> None:
        """For every case and spec, the keywords the file sets print the same from both servers."""
        for number, case in enumerate(CASES):
            directory = Path(self.mktemp()).resolve()
            keys = make_keys(directory / "keys")
            fill = {"host_key": keys.host_key, "dir": directory}
            for name, text in case.files.items():
                path = directory / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text.format(**fill))
            config = directory / f"case{number}.conf"
            config.write_text(case.text.format(**fill))
            written = case.text + "".join(case.files.values())
            keywords = {
                re.split(r"[\s=]", line.strip(), maxsplit=1)[0].lower()
                for line in written.splitlines()
                if line.strip() and not line.strip().startswith("#")
            }
            for spec in case.specs:
                await self.run_both(config, spec, keywords & COMPARED)


class RunningServerTests(TestCase):
    timeout = 60

    def config(self, keys: Keys, text: str) -> Path:
        path = keys.workdir / "rfwd-server.conf"
        path.write_text(text)
        return path

    def start(self, *arguments: str) -> ChildProcess:
        return spawn(
            self,
            reactor(),
            "rfwd-server",
            twistd_argv("rfwd-server", *arguments),
            env=plugin_env(),
        )

    async def test_file_takes_effect(self) -> None:
        """Port and ListenAddress from the file; PermitListen from a Match block for the user."""
        keys = make_keys(Path(self.mktemp()))
        port, allowed, other = free_port(), free_port(), free_port()
        config = self.config(
            keys,
            f"HostKey {keys.host_key}\nAuthorizedKeysFile {keys.authorized_keys}\n"
            f"Port {port}\nListenAddress 127.0.0.1\nGatewayPorts no\nPermitListen none\n"
            f"UsePAM no\nMatch User {keys.user} Address 127.0.0.0/8\n"
            f"  PermitListen {allowed}\n",
        )
        server = self.start("--config", str(config))
        listening = await server.wait_for(SERVER_LISTENING)
        self.assertEqual(int(listening.group(1)), port)
        self.assertTrue(server.find("rfwd-server does not act on sshd's UsePAM; ignored"))
        client = start_rfwd_client(
            self,
            reactor(),
            keys,
            port,
            [f"{allowed}:127.0.0.1:9", f"{other}:127.0.0.1:9"],
        )
        await client.wait_for(rf"Remote forward: server port {allowed} ")
        await client.wait_for(rf"remote port forwarding failed for listen port {other}:")

    async def test_command_line_overrides_the_file(self) -> None:
        """An option given on the command line wins over the file, even in a Match block."""
        keys = make_keys(Path(self.mktemp()))
        config = self.config(
            keys,
            f"HostKey {keys.host_key}\nGatewayPorts yes\nMaxSessions 3\n"
            "Match All\n  MaxAuthTries 2\n  MaxSessions 4\n",
        )
        child = self.start(
            "-T", "--config", str(config), "--gateway-ports", "no", "--max-auth-tries", "6"
        )
        await child.wait_ended(30)
        self.assertEqual(child.exit_code, 0, child.output())
        lines = child.output(1000).splitlines()
        self.assertIn("gatewayports no", lines)
        self.assertIn("maxauthtries 6", lines)
        self.assertIn("maxsessions 4", lines)

    async def test_bad_line_exits_255(self) -> None:
        """A bad line stops rfwd-server at start: FILE line N: reason, exit status 255."""
        keys = make_keys(Path(self.mktemp()))
        config = self.config(keys, f"HostKey {keys.host_key}\n# fine\nGatewayPorts sometimes\n")
        child = self.start("--config", str(config))
        await child.wait_ended(30)
        self.assertEqual(child.exit_code, 255)
        self.assertEqual(
            child.output().strip(),
            f"{config} line 3: GatewayPorts must be no, yes or clientspecified, not 'sometimes'",
        )

    async def test_usage_errors_exit_255(self) -> None:
        """-C without -T, or a bad -C, is one line and exit status 255."""
        keys = make_keys(Path(self.mktemp()))
        config = self.config(keys, f"HostKey {keys.host_key}\n")
        for arguments, message in [
            (["-C", "user=alice"], "-C needs -T"),
            (["-T", "-C", "who=alice"], "invalid test mode specification who=alice"),
        ]:
            child = self.start("--config", str(config), *arguments)
            await child.wait_ended(30)
            self.assertEqual(child.exit_code, 255)
            self.assertEqual(len(child.output().strip().splitlines()), 1, child.output())
            self.assertIn(message, child.output())
