"""
Which SSH messages a peer may send us, phase by phase: the transport's rules in one table.

Rules (RFC 4253, 4252, 4254 and OpenSSH's strict key exchange), for what we *receive*:

  1. The peer's identification line comes first.  A client must send it at once; only a server
     may send other lines before it (RFC 4253 section 4.2).
  2. The first key exchange: the peer's KEXINIT, the method's messages in order (the client's
     ECDH_INIT, the server's ECDH_REPLY), then NEWKEYS once the exchange is complete.  Nothing
     of user authentication before the first NEWKEYS.  Under strict KEX (the Terrapin fix)
     nothing else either, not even IGNORE or DEBUG.
  3. After the first NEWKEYS: one C{ssh-userauth} service per connection (SERVICE_REQUEST on a
     server, SERVICE_ACCEPT on a client), then that service's messages, then, once logged in,
     the connection protocol's.  A server takes a keyboard-interactive answer (INFO_RESPONSE)
     only while its own question (INFO_REQUEST) is unanswered (RFC 4256 section 3.4), as sshd
     does; a new USERAUTH_REQUEST abandons the question.
  4. A re-key may start in any phase after the first: from the peer's KEXINIT to its NEWKEYS it
     may send only key exchange messages (RFC 4253 section 7.1).
  5. DISCONNECT, IGNORE, UNIMPLEMENTED and DEBUG are welcome whenever rule 2's strict KEX does
     not forbid them.

Anything else is the peer's protocol error: the transport logs one short line (message number
and length, never the payload) and disconnects.  Pure: no Twisted, no Conch.
"""

from __future__ import annotations

import enum
from functools import cache

__all__ = [
    "IGNORED",
    "KexStage",
    "Phase",
    "Side",
    "accepted_messages",
    "describe_message",
    "refusal",
]

MSG_DISCONNECT = 1
MSG_IGNORE = 2
MSG_UNIMPLEMENTED = 3
MSG_DEBUG = 4
MSG_SERVICE_REQUEST = 5
MSG_SERVICE_ACCEPT = 6
MSG_EXT_INFO = 7
MSG_KEXINIT = 20
MSG_NEWKEYS = 21
MSG_KEX_ECDH_INIT = 30
MSG_KEX_ECDH_REPLY = 31
MSG_USERAUTH_REQUEST = 50
MSG_USERAUTH_FAILURE = 51
MSG_USERAUTH_SUCCESS = 52
MSG_USERAUTH_BANNER = 53
# PK_OK, PASSWD_CHANGEREQ and INFO_REQUEST share number 60; INFO_RESPONSE is 61.
MSG_USERAUTH_60 = 60
MSG_USERAUTH_INFO_RESPONSE = 61

_GENERIC = frozenset({MSG_DISCONNECT, MSG_IGNORE, MSG_UNIMPLEMENTED, MSG_DEBUG})
_CONNECTION = frozenset(range(80, 101))


class Side(enum.Enum):
    """Which end we are: what we receive depends on it."""

    CLIENT = "client"
    SERVER = "server"


class Phase(enum.Enum):
    """Where the connection is, as seen by the receiving end."""

    FIRST_KEX = "the initial key exchange"
    NO_SERVICE = "the wait for the service request"
    USERAUTH = "user authentication"
    # A server that sent a keyboard-interactive INFO_REQUEST, until the answer (or a new request).
    USERAUTH_INFO = "user authentication, awaiting a keyboard-interactive answer"
    CONNECTION = "the connection protocol"


class KexStage(enum.Enum):
    """The peer's side of a key exchange, the first or a re-key."""

    IDLE = "idle"
    # The peer's KEXINIT arrived: only the method's messages may follow.
    STARTED = "started"
    # The method is done (our reply sent, or the server's reply received): NEWKEYS may come.
    KEYED = "keyed"


# What arrives outside a key exchange, per side and phase (rule 3).
_OUTSIDE_KEX: dict[tuple[Side, Phase], frozenset[int]] = {
    (Side.SERVER, Phase.FIRST_KEX): _GENERIC | {MSG_KEXINIT},
    (Side.SERVER, Phase.NO_SERVICE): _GENERIC | {MSG_KEXINIT, MSG_SERVICE_REQUEST, MSG_EXT_INFO},
    # No INFO_RESPONSE unless the server asked a keyboard-interactive question (USERAUTH_INFO).
    (Side.SERVER, Phase.USERAUTH): _GENERIC | {MSG_KEXINIT, MSG_USERAUTH_REQUEST},
    (Side.SERVER, Phase.USERAUTH_INFO): _GENERIC
    | {MSG_KEXINIT, MSG_USERAUTH_REQUEST, MSG_USERAUTH_INFO_RESPONSE},
    # sshd ignores a USERAUTH_REQUEST after the login (RFC 4252 section 5.1): see IGNORED.
    (Side.SERVER, Phase.CONNECTION): _GENERIC | {MSG_KEXINIT, MSG_USERAUTH_REQUEST} | _CONNECTION,
    (Side.CLIENT, Phase.FIRST_KEX): _GENERIC | {MSG_KEXINIT},
    (Side.CLIENT, Phase.NO_SERVICE): _GENERIC | {MSG_KEXINIT, MSG_SERVICE_ACCEPT, MSG_EXT_INFO},
    (Side.CLIENT, Phase.USERAUTH): _GENERIC
    | {
        MSG_KEXINIT,
        MSG_EXT_INFO,
        MSG_USERAUTH_FAILURE,
        MSG_USERAUTH_SUCCESS,
        MSG_USERAUTH_BANNER,
        MSG_USERAUTH_60,
    },
    (Side.CLIENT, Phase.CONNECTION): _GENERIC | {MSG_KEXINIT} | _CONNECTION,
}
# A client never waits in USERAUTH_INFO (only a server asks questions): the same as USERAUTH.
_OUTSIDE_KEX[Side.CLIENT, Phase.USERAUTH_INFO] = _OUTSIDE_KEX[Side.CLIENT, Phase.USERAUTH]

# Accepted, and then dropped without an answer.
IGNORED: dict[tuple[Side, Phase], frozenset[int]] = {
    (Side.SERVER, Phase.CONNECTION): frozenset({MSG_USERAUTH_REQUEST}),
}

# The key exchange method's message from the peer: the ECDH exchanges we offer use 30 and 31.
_METHOD_MESSAGE = {Side.SERVER: MSG_KEX_ECDH_INIT, Side.CLIENT: MSG_KEX_ECDH_REPLY}


@cache
def accepted_messages(side: Side, phase: Phase, stage: KexStage, strict: bool) -> frozenset[int]:
    """
    The message numbers the peer may send now.  C{strict} is whether strict KEX was agreed;
    it only matters during the first key exchange.
    """
    generic = frozenset({MSG_DISCONNECT}) if strict and phase is Phase.FIRST_KEX else _GENERIC
    if stage is KexStage.STARTED:
        return generic | {_METHOD_MESSAGE[side]}
    if stage is KexStage.KEYED:
        return generic | {MSG_NEWKEYS}
    return _OUTSIDE_KEX[side, phase]


_NAMES = {
    MSG_DISCONNECT: "DISCONNECT",
    MSG_IGNORE: "IGNORE",
    MSG_UNIMPLEMENTED: "UNIMPLEMENTED",
    MSG_DEBUG: "DEBUG",
    MSG_SERVICE_REQUEST: "SERVICE_REQUEST",
    MSG_SERVICE_ACCEPT: "SERVICE_ACCEPT",
    MSG_EXT_INFO: "EXT_INFO",
    MSG_KEXINIT: "KEXINIT",
    MSG_NEWKEYS: "NEWKEYS",
    MSG_KEX_ECDH_INIT: "KEX_ECDH_INIT",
    MSG_KEX_ECDH_REPLY: "KEX_ECDH_REPLY",
    MSG_USERAUTH_REQUEST: "USERAUTH_REQUEST",
    MSG_USERAUTH_FAILURE: "USERAUTH_FAILURE",
    MSG_USERAUTH_SUCCESS: "USERAUTH_SUCCESS",
    MSG_USERAUTH_BANNER: "USERAUTH_BANNER",
    MSG_USERAUTH_60: "USERAUTH_PK_OK/INFO_REQUEST",
    MSG_USERAUTH_INFO_RESPONSE: "USERAUTH_INFO_RESPONSE",
    80: "GLOBAL_REQUEST",
    81: "REQUEST_SUCCESS",
    82: "REQUEST_FAILURE",
    90: "CHANNEL_OPEN",
    91: "CHANNEL_OPEN_CONFIRMATION",
    92: "CHANNEL_OPEN_FAILURE",
    93: "CHANNEL_WINDOW_ADJUST",
    94: "CHANNEL_DATA",
    95: "CHANNEL_EXTENDED_DATA",
    96: "CHANNEL_EOF",
    97: "CHANNEL_CLOSE",
    98: "CHANNEL_REQUEST",
    99: "CHANNEL_SUCCESS",
    100: "CHANNEL_FAILURE",
}


def describe_message(number: int) -> str:
    """C{KEXINIT}, or C{unassigned} for numbers without a name here."""
    return _NAMES.get(number, "unassigned")


def refusal(side: Side, phase: Phase, stage: KexStage, message: int, length: int) -> str:
    """
    Why C{message} (of C{length} bytes) is refused now, for the log and the peer: its number,
    name and length, never its content.
    """
    if message == MSG_SERVICE_REQUEST and phase in (Phase.USERAUTH, Phase.USERAUTH_INFO):
        why = "a second service request"
    elif message == MSG_SERVICE_REQUEST and phase is Phase.CONNECTION:
        why = "service request after authentication"
    elif message == MSG_NEWKEYS and stage is not KexStage.KEYED:
        why = "NEWKEYS before the key exchange was complete"
    else:
        rekey = stage is not KexStage.IDLE and phase is not Phase.FIRST_KEX
        during = phase.value + (", in a key re-exchange" if rekey else "")
        why = f"unexpected message type {message} during {during}"
    return f"{why} ({describe_message(message)}, {length} bytes)"
