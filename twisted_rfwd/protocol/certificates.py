"""
OpenSSH certificates (PROTOCOL.certkeys): parsing the wire format, and the checks that need no
cryptography (type, validity window, principals, critical options).  Verifying the CA's
signature needs a key implementation and is done by the SSH layer.  Pure: no Twisted.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol.wire import Reader

__all__ = [
    "CERT_ALGORITHMS",
    "CERT_TYPES",
    "HOST_CERT",
    "USER_CERT",
    "Certificate",
    "certificate_algorithms",
    "is_certificate",
    "parse_certificate",
]

USER_CERT = 1
HOST_CERT = 2
# uint64 "valid before" meaning forever.
FOREVER = 0xFFFFFFFFFFFFFFFF

# Certificate type -> the plain key type, and the key's public fields as the wire lays them out
# ("s": string, "m": mpint, also read as a string here).
CERT_TYPES: dict[bytes, tuple[bytes, str]] = {
    b"ssh-ed25519-cert-v01@openssh.com": (b"ssh-ed25519", "s"),
    b"ecdsa-sha2-nistp256-cert-v01@openssh.com": (b"ecdsa-sha2-nistp256", "ss"),
    b"ecdsa-sha2-nistp384-cert-v01@openssh.com": (b"ecdsa-sha2-nistp384", "ss"),
    b"ecdsa-sha2-nistp521-cert-v01@openssh.com": (b"ecdsa-sha2-nistp521", "ss"),
    b"ssh-rsa-cert-v01@openssh.com": (b"ssh-rsa", "mm"),
    b"sk-ssh-ed25519-cert-v01@openssh.com": (b"sk-ssh-ed25519@openssh.com", "ss"),
    b"sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": (b"sk-ecdsa-sha2-nistp256@openssh.com", "sss"),
}

# Signature algorithms naming a certificate (KEXINIT host key algorithms, userauth requests) ->
# the plain algorithm the certified key signs with.  No SHA-1 C{ssh-rsa-cert-v01}, as elsewhere.
CERT_ALGORITHMS: dict[bytes, bytes] = {
    b"ssh-ed25519-cert-v01@openssh.com": b"ssh-ed25519",
    b"ecdsa-sha2-nistp256-cert-v01@openssh.com": b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384-cert-v01@openssh.com": b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521-cert-v01@openssh.com": b"ecdsa-sha2-nistp521",
    b"rsa-sha2-512-cert-v01@openssh.com": b"rsa-sha2-512",
    b"rsa-sha2-256-cert-v01@openssh.com": b"rsa-sha2-256",
}


def certificate_algorithms(cert_type: bytes) -> list[bytes]:
    """The signature algorithms a certificate of C{cert_type} can be offered under."""
    if cert_type == b"ssh-rsa-cert-v01@openssh.com":
        return [b"rsa-sha2-512-cert-v01@openssh.com", b"rsa-sha2-256-cert-v01@openssh.com"]
    return [cert_type] if cert_type in CERT_ALGORITHMS else []


def is_certificate(blob: bytes) -> bool:
    """Whether a public key blob names a certificate type (the rest is not checked)."""
    if len(blob) < 4:
        return False
    length = struct.unpack(">L", blob[:4])[0]
    return blob[4 : 4 + length] in CERT_TYPES


def _string(data: bytes) -> bytes:
    return struct.pack(">L", len(data)) + data


@dataclass(frozen=True)
class Certificate:
    """One certificate, as signed: what it certifies, for whom, when, and by which CA."""

    cert_type: bytes
    key_type: bytes
    nonce: bytes
    # The certified public key's own wire blob (its type, then its public fields).
    key_blob: bytes
    serial: int
    kind: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: dict[str, bytes] = field(default_factory=dict)
    extensions: dict[str, bytes] = field(default_factory=dict)
    signature_key: bytes = b""
    signature: bytes = b""
    # Everything the CA signed: the certificate up to, not including, the signature.
    signed_data: bytes = b""

    def valid_at(self, now: float) -> bool:
        """Whether C{now} (seconds since the epoch) is inside the validity window."""
        return self.valid_after <= now < self.valid_before or (
            self.valid_before == FOREVER and self.valid_after <= now
        )

    def allows_principal(self, name: str) -> bool:
        """An empty principals list means any (OpenSSH accepts it for user certificates only
        when the CA line names principals=; callers decide)."""
        return name in self.principals

    def describe(self) -> str:
        """C{ID "key id" serial N}, as sshd names a certificate in its log."""
        return f'ID "{self.key_id[:64]}" serial {self.serial}'


def _options(data: bytes, what: str) -> dict[str, bytes]:
    reader = Reader(data, what)
    found: dict[str, bytes] = {}
    previous = b""
    while reader.remaining:
        name = reader.string()
        value = reader.string()
        if name <= previous and previous:
            raise MalformedPacket(what, "options out of order or repeated")
        previous = name
        found[name.decode("utf-8", "replace")] = value
    return found


def parse_certificate(blob: bytes) -> Certificate:
    """
    Parse a certificate blob (as in a C{-cert.pub} file, base64-decoded, or on the wire).

    @raise MalformedPacket: not a well-formed certificate of a type we know.
    """
    reader = Reader(blob, "certificate")
    cert_type = reader.string()
    known = CERT_TYPES.get(cert_type)
    if known is None:
        raise MalformedPacket("certificate", f"unknown type {cert_type[:64]!r}")
    key_type, fields = known
    nonce = reader.string()
    key_fields = [reader.string() for _ in fields]
    serial = reader.uint64()
    kind = reader.uint32()
    key_id = reader.string().decode("utf-8", "replace")
    principals_data = reader.string()
    valid_after = reader.uint64()
    valid_before = reader.uint64()
    critical = _options(reader.string(), "certificate critical options")
    extensions = _options(reader.string(), "certificate extensions")
    reader.string()  # reserved
    signature_key = reader.string()
    signed_length = reader.offset
    signature = reader.string()
    if reader.remaining:
        raise MalformedPacket("certificate", "bytes after the signature")
    principals = []
    names = Reader(principals_data, "certificate principals")
    while names.remaining:
        principals.append(names.string().decode("utf-8", "replace"))
    if kind not in (USER_CERT, HOST_CERT):
        raise MalformedPacket("certificate", f"unknown certificate type {kind}")
    return Certificate(
        cert_type=cert_type,
        key_type=key_type,
        nonce=nonce,
        key_blob=_string(key_type) + b"".join(_string(f) for f in key_fields),
        serial=serial,
        kind=kind,
        key_id=key_id,
        principals=tuple(principals),
        valid_after=valid_after,
        valid_before=valid_before,
        critical_options=critical,
        extensions=extensions,
        signature_key=signature_key,
        signature=signature,
        signed_data=blob[:signed_length],
    )


# -- User certificates on the server (issue #13 item 2): the checks sshd makes that need no key.

# The publickey algorithms that carry a user certificate, in OpenSSH's order, and for each the
# certificate type its blob must have and the signature algorithm the user signs with.  No
# SHA-1 (ssh-rsa-cert-v01), as for plain keys; the FIDO certificate types are not here.
CERTIFICATE_SIGNATURES: dict[bytes, tuple[bytes, bytes]] = {
    b"ssh-ed25519-cert-v01@openssh.com": (b"ssh-ed25519-cert-v01@openssh.com", b"ssh-ed25519"),
    b"ecdsa-sha2-nistp256-cert-v01@openssh.com": (
        b"ecdsa-sha2-nistp256-cert-v01@openssh.com",
        b"ecdsa-sha2-nistp256",
    ),
    b"ecdsa-sha2-nistp384-cert-v01@openssh.com": (
        b"ecdsa-sha2-nistp384-cert-v01@openssh.com",
        b"ecdsa-sha2-nistp384",
    ),
    b"ecdsa-sha2-nistp521-cert-v01@openssh.com": (
        b"ecdsa-sha2-nistp521-cert-v01@openssh.com",
        b"ecdsa-sha2-nistp521",
    ),
    # FIDO keys' certificates: the user's signature carries the plain sk type.
    b"sk-ssh-ed25519-cert-v01@openssh.com": (
        b"sk-ssh-ed25519-cert-v01@openssh.com",
        b"sk-ssh-ed25519@openssh.com",
    ),
    b"sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": (
        b"sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
        b"sk-ecdsa-sha2-nistp256@openssh.com",
    ),
    b"rsa-sha2-512-cert-v01@openssh.com": (b"ssh-rsa-cert-v01@openssh.com", b"rsa-sha2-512"),
    b"rsa-sha2-256-cert-v01@openssh.com": (b"ssh-rsa-cert-v01@openssh.com", b"rsa-sha2-256"),
}
USER_CERTIFICATE_ALGORITHMS: list[bytes] = list(CERTIFICATE_SIGNATURES)
# sshd's CASignatureAlgorithms default: what a CA may sign certificates with (no SHA-1).
CA_SIGNATURE_ALGORITHMS: frozenset[bytes] = frozenset(
    {
        b"ssh-ed25519",
        b"ecdsa-sha2-nistp256",
        b"ecdsa-sha2-nistp384",
        b"ecdsa-sha2-nistp521",
        b"sk-ssh-ed25519@openssh.com",
        b"sk-ecdsa-sha2-nistp256@openssh.com",
        b"rsa-sha2-512",
        b"rsa-sha2-256",
    }
)
# The critical options sshd knows (auth-options.c); any other refuses the certificate.
# force-command is accepted: rfwd runs no commands, so there is nothing for it to force.
KNOWN_CRITICAL_OPTIONS = frozenset({"force-command", "source-address", "verify-required"})


@dataclass(frozen=True)
class CertificateOptions:
    """What a user certificate itself allows (sshd's C{sshauthopt_from_cert})."""

    port_forwarding: bool
    # source-address: CIDR blocks the client must connect from (None: anywhere).
    source_addresses: tuple[str, ...] | None = None
    force_command: str | None = None


def certificate_options(certificate: Certificate) -> CertificateOptions:
    """
    The certificate's critical options and extensions, as sshd reads them.

    @raise ValueError: an unknown critical option, or one sshd could not parse (the login is
        refused, in sshd's words).
    """
    options = certificate.critical_options
    for name in options:
        if name not in KNOWN_CRITICAL_OPTIONS:
            raise ValueError(f'certificate critical option "{name[:64]}" is not supported')
    sources: tuple[str, ...] | None = None
    if "source-address" in options:
        sources = _source_addresses(_option_string(options["source-address"], "source-address"))
    command = None
    if "force-command" in options:
        command = _option_string(options["force-command"], "force-command")
    return CertificateOptions(
        port_forwarding="permit-port-forwarding" in certificate.extensions,
        source_addresses=sources,
        force_command=command,
    )


def _option_string(value: bytes, name: str) -> str:
    reader = Reader(value, f"certificate option {name}")
    try:
        text = reader.text()
    except MalformedPacket:
        raise ValueError(f"certificate {name} contents invalid") from None
    if reader.remaining:
        raise ValueError(f"certificate {name} contents invalid")
    return text


def _source_addresses(text: str) -> tuple[str, ...]:
    """sshd's C{addr_match_cidr_list} syntax: comma-separated addresses and CIDR blocks."""
    blocks = []
    for item in text.split(","):
        try:
            blocks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise ValueError("certificate source-address contents invalid") from None
    return tuple(blocks)


def source_address_allows(blocks: tuple[str, ...], address: str) -> bool:
    """Whether the client's numeric C{address} is in one of the source-address C{blocks}."""
    if address.lower().startswith("::ffff:") and "." in address:
        address = address[7:]
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(client in ipaddress.ip_network(block) for block in blocks)


def user_certificate_refusal(
    certificate: Certificate, now: float, principal: str | None, require_principal: bool
) -> str | None:
    """
    sshd's C{sshkey_cert_check_authority} for a user certificate: its type, its validity
    window at C{now}, and C{principal} among its principals (None: not checked).  A
    certificate without principals is refused if C{require_principal} (TrustedUserCAKeys),
    else allowed for anyone (a C{cert-authority} line).  Returns why it is refused, or None.
    """
    if certificate.kind != USER_CERT:
        return "certificate invalid: not a user certificate"
    if now < certificate.valid_after:
        return "certificate invalid: not yet valid"
    if not certificate.valid_at(now):
        return "certificate invalid: expired"
    if not certificate.principals:
        if require_principal:
            return "certificate lacks principal list"
    elif principal is not None and principal not in certificate.principals:
        return "certificate invalid: name is not a listed principal"
    return None
