"""
The shape of every transport and user-authentication message that Conch parses for us.

Conch's parsers raise C{struct.error}, C{IndexError} or C{ValueError} on a truncated or garbled
payload, which cannot be told apart from a bug of ours.  Each message is checked here first, so
a peer's garbage becomes a L{MalformedPacket} (its fault: one log line and a disconnect), and
whatever Conch raises after that is ours (a traceback).  Pure: no Twisted, no Conch.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol import phases
from twisted_rfwd.protocol.wire import Reader

__all__ = ["check_shape", "loggable"]

# Longest name-list or string we log from a peer.
_LOG_LIMIT = 64


def loggable(data: bytes, limit: int = _LOG_LIMIT) -> str:
    """Peer-chosen bytes (a user name, a reason) made short and printable for a log line."""
    text = data[:limit].decode("utf-8", "replace")
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned + ("..." if len(data) > limit else "")


def _end(reader: Reader, what: str, extra_allowed: bool = False) -> None:
    if reader.rest() and not extra_allowed:
        raise MalformedPacket(what, "unexpected bytes after the message")


def _disconnect(payload: bytes) -> None:
    reader = Reader(payload, "SSH_MSG_DISCONNECT")
    reader.uint32()
    reader.string()
    # The language tag is often missing; anything after it is ignored.


def _unimplemented(payload: bytes) -> None:
    reader = Reader(payload, "SSH_MSG_UNIMPLEMENTED")
    reader.uint32()
    _end(reader, "SSH_MSG_UNIMPLEMENTED")


def _debug(payload: bytes) -> None:
    reader = Reader(payload, "SSH_MSG_DEBUG")
    reader.boolean()
    reader.string()
    reader.string()


def _service(what: str) -> Callable[[bytes], None]:
    def check(payload: bytes) -> None:
        reader = Reader(payload, what)
        reader.string()
        _end(reader, what)

    return check


def _ext_info(payload: bytes) -> None:
    reader = Reader(payload, "SSH_MSG_EXT_INFO")
    count = reader.uint32()
    if count > 64:
        raise MalformedPacket("SSH_MSG_EXT_INFO", f"{count} extensions")
    for _ in range(count):
        reader.string()
        reader.string()


def _kexinit(payload: bytes) -> None:
    if len(payload) < 16:
        raise MalformedPacket("SSH_MSG_KEXINIT", "no cookie")
    reader = Reader(payload[16:], "SSH_MSG_KEXINIT")
    for _ in range(10):
        names = reader.string()
        if not names.isascii():
            raise MalformedPacket("SSH_MSG_KEXINIT", "a name-list is not ASCII")
    reader.boolean()
    reader.uint32()


def _newkeys(payload: bytes) -> None:
    if payload:
        raise MalformedPacket("SSH_MSG_NEWKEYS", "it takes no data")


def _ecdh_init(payload: bytes) -> None:
    reader = Reader(payload, "SSH_MSG_KEX_ECDH_INIT")
    if not reader.string():
        raise MalformedPacket("SSH_MSG_KEX_ECDH_INIT", "empty public key")
    _end(reader, "SSH_MSG_KEX_ECDH_INIT")


def _ecdh_reply(payload: bytes) -> None:
    reader = Reader(payload, "SSH_MSG_KEX_ECDH_REPLY")
    for _ in range(3):
        reader.string()


def _userauth_request(payload: bytes) -> None:
    reader = Reader(payload, "SSH_MSG_USERAUTH_REQUEST")
    reader.string()
    reader.string()
    method = reader.string()
    if method == b"publickey":
        reader = Reader(reader.rest(), "publickey userauth request")
        signed = reader.boolean()
        reader.string()
        reader.string()
        if signed:
            signature = Reader(reader.string(), "publickey signature")
            signature.string()
            signature.string()
    elif method == b"password":
        reader = Reader(reader.rest(), "password userauth request")
        changing = reader.boolean()
        reader.string()
        if changing:
            # A change request: refused and counted as a failure by the server, as sshd does.
            reader.string()


# sshd's limit on keyboard-interactive answers in one message (auth2-chall.c).
_MAX_INFO_RESPONSES = 100


def _userauth_info_response(payload: bytes) -> None:
    reader = Reader(payload, "SSH_MSG_USERAUTH_INFO_RESPONSE")
    count = reader.uint32()
    if count > _MAX_INFO_RESPONSES:
        raise MalformedPacket("SSH_MSG_USERAUTH_INFO_RESPONSE", f"{count} responses")
    for _ in range(count):
        reader.string()
    _end(reader, "SSH_MSG_USERAUTH_INFO_RESPONSE")


def _userauth_failure(payload: bytes) -> None:
    reader = Reader(payload, "SSH_MSG_USERAUTH_FAILURE")
    reader.string()
    reader.boolean()


def _userauth_banner(payload: bytes) -> None:
    reader = Reader(payload, "SSH_MSG_USERAUTH_BANNER")
    reader.string()


_SERVER_CHECKS: dict[int, Callable[[bytes], None]] = {
    phases.MSG_DISCONNECT: _disconnect,
    phases.MSG_UNIMPLEMENTED: _unimplemented,
    phases.MSG_DEBUG: _debug,
    phases.MSG_SERVICE_REQUEST: _service("SSH_MSG_SERVICE_REQUEST"),
    phases.MSG_EXT_INFO: _ext_info,
    phases.MSG_KEXINIT: _kexinit,
    phases.MSG_NEWKEYS: _newkeys,
    phases.MSG_KEX_ECDH_INIT: _ecdh_init,
    phases.MSG_USERAUTH_REQUEST: _userauth_request,
    phases.MSG_USERAUTH_INFO_RESPONSE: _userauth_info_response,
}

_CLIENT_CHECKS: dict[int, Callable[[bytes], None]] = {
    phases.MSG_DISCONNECT: _disconnect,
    phases.MSG_UNIMPLEMENTED: _unimplemented,
    phases.MSG_DEBUG: _debug,
    phases.MSG_SERVICE_ACCEPT: _service("SSH_MSG_SERVICE_ACCEPT"),
    phases.MSG_EXT_INFO: _ext_info,
    phases.MSG_KEXINIT: _kexinit,
    phases.MSG_NEWKEYS: _newkeys,
    phases.MSG_KEX_ECDH_REPLY: _ecdh_reply,
    phases.MSG_USERAUTH_FAILURE: _userauth_failure,
    phases.MSG_USERAUTH_BANNER: _userauth_banner,
}


def check_shape(side: phases.Side, message: int, payload: bytes) -> None:
    """
    Raise L{MalformedPacket} if C{payload} cannot be a C{message} that this side receives.
    Connection-protocol messages are parsed by our own L{twisted_rfwd.protocol.wire} and pass here.
    """
    checks = _SERVER_CHECKS if side is phases.Side.SERVER else _CLIENT_CHECKS
    check = checks.get(message)
    if check is not None:
        check(payload)
