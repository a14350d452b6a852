"""Everything rfwd-server can be told, as one value; the twistd options build one of these."""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.conch.ssh.keys import Key

from twisted_rfwd.protocol.algorithms import PUBLIC_KEY_ALGORITHMS
from twisted_rfwd.protocol.certificates import USER_CERTIFICATE_ALGORITHMS
from twisted_rfwd.protocol.policy import GatewayPorts, ListenPolicy
from twisted_rfwd.protocol.settings import SharedSettings
from twisted_rfwd.protocol.sk import SK_ALGORITHMS

__all__ = ["ServerConfig"]


@dataclass
class ServerConfig(SharedSettings):
    """
    Server settings, named after their sshd_config counterparts where one exists.

    @ivar host_keys: private host keys; at least one.
    @ivar authorized_keys: C{AuthorizedKeysFile} template (C{%u} user, C{%h} home).
    """

    host_keys: list[Key]
    # sshd's HostCertificate: certificate blobs, each certifying one of host_keys.
    host_certificates: list[bytes] = field(default_factory=list)
    authorized_keys: str = "%h/.ssh/authorized_keys"
    gateway_ports: GatewayPorts = GatewayPorts.NO
    permit_listen: ListenPolicy = field(default_factory=ListenPolicy)
    login_grace_time: float = 120.0
    max_auth_tries: int = 6
    # sshd's MaxStartups start:rate:full: unauthenticated connections beyond start are dropped
    # with probability rate% rising linearly to 100% at full.
    max_startups: tuple[int, int, int] = (10, 30, 100)
    # sshd's PerSourceMaxStartups: unauthenticated connections per source address (None: any).
    per_source_max_startups: int | None = None
    # What sshd gets from one process per connection, and one reactor must do itself.
    max_forwards_per_connection: int = 100
    max_forwards_per_user: int = 200
    # OpenSSH's own ceiling (CHANNELS_MAX_CHANNELS in channels.c).
    max_channels_per_connection: int = 16384
    # Sessions (issue #10): accept "session" channels and hold them open, running nothing, so
    # that "ssh -R ... host" without -N works; False refuses them as before.
    sessions: bool = True
    max_sessions: int = 10
    # Logins: sshd's PubkeyAuthentication, PasswordAuthentication, KbdInteractiveAuthentication,
    # with passwords checked against a file of bcrypt hashes ("user:$2b$..." lines).
    pubkey_authentication: bool = True
    password_authentication: bool = False
    kbd_interactive_authentication: bool = False
    password_hashes: str | None = None
    # sshd's AllowUsers, DenyUsers, AllowGroups, DenyGroups (patterns; empty: no restriction).
    allow_users: list[str] = field(default_factory=list)
    deny_users: list[str] = field(default_factory=list)
    allow_groups: list[str] = field(default_factory=list)
    deny_groups: list[str] = field(default_factory=list)
    # sshd's AllowTcpForwarding: yes/all or remote allow -R; no/local refuse it.
    allow_tcp_forwarding: bool = True
    # sshd's AllowStreamLocalForwarding (yes/all or remote allow Unix-socket -R; no/local refuse
    # it), StreamLocalBindMask (the umask the socket file is created with) and
    # StreamLocalBindUnlink (remove an existing socket file first, or refuse the forward).
    allow_stream_local_forwarding: bool = True
    stream_local_bind_mask: int = 0o177
    stream_local_bind_unlink: bool = False
    # sshd's Banner: a file sent before authentication (None: none).
    banner: str | None = None
    # sshd's HostKeyAlgorithms and PubkeyAcceptedAlgorithms (signature algorithm names).
    host_key_algorithms: list[bytes] = field(default_factory=lambda: list(PUBLIC_KEY_ALGORITHMS))
    pubkey_accepted_algorithms: list[bytes] = field(
        default_factory=lambda: [
            *USER_CERTIFICATE_ALGORITHMS,
            *PUBLIC_KEY_ALGORITHMS,
            *SK_ALGORITHMS,
        ]
    )
    # User certificates: sshd's TrustedUserCAKeys, AuthorizedPrincipalsFile (%u, %h; relative
    # to the home) and RevokedKeys (public keys or a KRL); None: none.
    trusted_user_ca_keys: str | None = None
    authorized_principals_file: str | None = None
    revoked_keys: str | None = None
    client_alive_interval: float = 15.0
    client_alive_count_max: int = 3
