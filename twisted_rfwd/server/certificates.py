"""
User certificates on rfwd-server, checked as sshd checks them (OpenSSH's C{auth2-pubkey.c},
C{auth2-pubkeyfile.c}, C{auth-options.c}): the checks that need keys or files.  The pure ones
(type, validity window, principals, critical options) are in
L{twisted_rfwd.protocol.certificates}; C{RevokedKeys} files and KRLs in
L{twisted_rfwd.protocol.krl}.

A certificate logs in when, in sshd's order:

  1. neither it, its key nor its CA is revoked (C{RevokedKeys}; a file that cannot be read or
     parsed refuses every key, as in sshd);
  2. its CA signed it, with an algorithm of sshd's default C{CASignatureAlgorithms};
  3. either its CA is in C{TrustedUserCAKeys} and the user name is one of its principals (or,
     with C{AuthorizedPrincipalsFile}, one of its principals is listed there), or a
     C{cert-authority} line of the user's authorized_keys names its CA and the certificate
     holds one of the line's C{principals=} (else the user name; a certificate without
     principals is good for anyone there, as in sshd);
  4. it is a user certificate inside its validity window, has no critical option sshd does not
     know, and the client's address is in its C{source-address} (and in the line's C{from=}).

Forwarding is allowed only with the C{permit-port-forwarding} extension (and what the line or
principals line allows).  C{force-command} is accepted: rfwd runs no commands.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from twisted.conch.ssh.keys import Key

from twisted_rfwd.errors import CertificateRefused, MalformedPacket
from twisted_rfwd.protocol.authorized_keys import KeyOptions, parse_principals_lines
from twisted_rfwd.protocol.certificates import (
    CA_SIGNATURE_ALGORITHMS,
    CERT_TYPES,
    Certificate,
    certificate_options,
    source_address_allows,
    user_certificate_refusal,
)
from twisted_rfwd.protocol.krl import listed_keys, parse_revoked_keys
from twisted_rfwd.protocol.sk import SKRequirements
from twisted_rfwd.protocol.wire import Reader
from twisted_rfwd.server.authorized_keys import AuthorizedKey, matches_from

__all__ = [
    "CertificateRefused",
    "CertifiedLogin",
    "check_user_certificate",
    "expand_user_template",
    "revocation_refusal",
    "verified_ca_key",
]


@dataclass(frozen=True)
class CertifiedLogin:
    """A certificate that logs in: its own key (the user signs with it), its CA, its options."""

    key: Key
    ca: Key
    options: KeyOptions
    # What trusted the CA: C{TrustedUserCAKeys FILE} or an authorized_keys C{FILE line N}.
    trusted_by: str


def expand_user_template(
    template: str, user: str, home_of: Callable[[str], str | None]
) -> str | None:
    """
    sshd's C{%u} (user name), C{%h} (home directory) and C{%%} in a path; None when the
    template needs a home the user does not have.  sshd's relative paths are under the home.
    """
    out: list[str] = []
    i = 0
    while i < len(template):
        if template[i] == "%" and i + 1 < len(template):
            token = template[i + 1]
            if token == "u":
                out.append(user)
            elif token == "h":
                home = home_of(user)
                if home is None:
                    return None
                out.append(home)
            elif token == "%":
                out.append("%")
            else:
                out.append(template[i : i + 2])
            i += 2
        else:
            out.append(template[i])
            i += 1
    return "".join(out)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def revocation_refusal(
    path: str | None, blob: bytes, certificate: Certificate | None = None
) -> str | None:
    """
    Why C{RevokedKeys} (C{path}; None: not set) refuses the key C{blob} or C{certificate}, or
    None.  An unreadable or unusable file refuses every key, as sshd does.
    """
    if path is None:
        return None
    try:
        revocations = parse_revoked_keys(_read(path))
    except OSError as e:
        return f"cannot read RevokedKeys {path}: {e.strerror}"
    except MalformedPacket as e:
        return f"RevokedKeys {path} is unusable: {e}"
    reason = revocations.refusal(blob, certificate)
    return None if reason is None else f"{reason} (RevokedKeys {path})"


def verified_ca_key(certificate: Certificate) -> Key:
    """
    The CA's key, once its signature over the certificate verifies with an algorithm of sshd's
    default C{CASignatureAlgorithms}.

    @raise CertificateRefused: otherwise.
    """
    try:
        ca_type = Reader(certificate.signature_key, "CA key").string()
        algorithm = Reader(certificate.signature, "CA signature").string()
    except MalformedPacket:
        raise CertificateRefused("certificate signature is malformed") from None
    if ca_type in CERT_TYPES:
        raise CertificateRefused("certificate is signed by a certificate, not a CA key")
    if algorithm not in CA_SIGNATURE_ALGORITHMS:
        raise CertificateRefused(
            f"certificate signature algorithm {algorithm[:64].decode('ascii', 'replace')} "
            "is not in CASignatureAlgorithms"
        )
    try:
        ca = Key.fromString(certificate.signature_key)
        good = bool(ca.verify(certificate.signature, certificate.signed_data))
    except Exception:  # Conch raises anything on a key or signature it cannot use
        good = False
    if not good:
        raise CertificateRefused("certificate signature does not verify")
    result: Key = ca
    return result


def _certified_key(certificate: Certificate) -> Key:
    try:
        key: Key = Key.fromString(certificate.key_blob)
    except Exception:  # Conch raises anything on a key it cannot parse
        raise CertificateRefused("the certified key cannot be used") from None
    return key


def _listed_keys(path: str) -> set[bytes] | None:
    """The plain public keys in a file of public key lines (as TrustedUserCAKeys is)."""
    try:
        text = _read(path)
    except OSError:
        return None
    return listed_keys(text)


def _merge(line: KeyOptions | None, certificate: Certificate) -> KeyOptions:
    """
    sshd's C{sshauthopt_merge}: the line's options (None: TrustedUserCAKeys alone), forwarding
    only if both allow it, and a FIDO key's touch and verification as both ask.
    """
    allowed = certificate_options(certificate).port_forwarding
    sk = SKRequirements.for_certificate(certificate, line)
    base = line if line is not None else KeyOptions()
    return dataclasses.replace(
        base,
        port_forwarding=base.port_forwarding and allowed,
        touch_required=sk.touch_required,
        verify_required=sk.verify_required,
    )


def _check_options(
    certificate: Certificate, line: KeyOptions, peer_host: str | None, now: float, where: str
) -> None:
    """C{source-address} (the certificate's) and C{from=}, C{expiry-time} (the line's)."""
    try:
        options = certificate_options(certificate)
    except ValueError as e:
        raise CertificateRefused(str(e)) from None
    if options.source_addresses is not None and (
        peer_host is None or not source_address_allows(options.source_addresses, peer_host)
    ):
        raise CertificateRefused(f"certificate source-address does not allow {peer_host}")
    if line.from_patterns is not None and (
        peer_host is None or not matches_from(line.from_patterns, peer_host)
    ):
        raise CertificateRefused(f"{where} does not allow {peer_host}")
    if line.expiry is not None and datetime.fromtimestamp(now, timezone.utc) >= line.expiry:
        raise CertificateRefused(f"{where} has expired")


def _principal_line(
    certificate: Certificate,
    template: str,
    user: str,
    home_of: Callable[[str], str | None],
    warn: Callable[[str], None],
) -> tuple[KeyOptions, str] | None:
    """sshd's C{match_principals_file}: the first line naming one of the certificate's."""
    path = expand_user_template(template, user, home_of)
    if path is None:
        return None
    if not path.startswith("/"):
        home = home_of(user)
        if home is None:
            return None
        path = f"{home}/{path}"
    try:
        text = _read(path)
    except OSError:
        return None
    lines, warnings = parse_principals_lines(text, path)
    for warning in warnings:
        warn(f"Ignoring authorized principal: {warning}")
    for line in lines:
        if line.name in certificate.principals:
            return line.options, line.source
    return None


def _by_trusted_ca(
    certificate: Certificate,
    user: str,
    peer_host: str | None,
    now: float,
    trusted_user_ca_keys: str,
    principals_file: str | None,
    home_of: Callable[[str], str | None],
    warn: Callable[[str], None],
) -> KeyOptions | None:
    """sshd's C{user_cert_trusted_ca}: None when the CA is not in the file."""
    listed = _listed_keys(trusted_user_ca_keys)
    if listed is None or certificate.signature_key not in listed:
        return None
    where = f"TrustedUserCAKeys {trusted_user_ca_keys}"
    line_options = KeyOptions()
    accepting_line: KeyOptions | None = None
    principal: str | None = user
    if principals_file is not None:
        found = _principal_line(certificate, principals_file, user, home_of, warn)
        if found is None:
            raise CertificateRefused("certificate does not contain an authorized principal")
        line_options, where = found
        accepting_line = line_options
        principal = None
    reason = user_certificate_refusal(certificate, now, principal, require_principal=True)
    if reason is not None:
        raise CertificateRefused(reason)
    _check_options(certificate, line_options, peer_host, now, where)
    return _merge(accepting_line, certificate)


def _by_authority_line(
    certificate: Certificate, entry: AuthorizedKey, user: str, peer_host: str | None, now: float
) -> KeyOptions:
    """sshd's C{auth_check_authkey_line} for a C{cert-authority} line naming the CA."""
    wanted = entry.options.principals
    if wanted is not None and not any(p in wanted for p in certificate.principals):
        raise CertificateRefused("certificate does not contain an authorized principal")
    principal = user if wanted is None else None
    reason = user_certificate_refusal(certificate, now, principal, require_principal=False)
    if reason is not None:
        raise CertificateRefused(reason)
    _check_options(certificate, entry.options, peer_host, now, entry.source)
    return _merge(entry.options, certificate)


def check_user_certificate(
    certificate: Certificate,
    user: str,
    peer_host: str | None,
    now: float,
    *,
    trusted_user_ca_keys: str | None,
    principals_file: str | None,
    revoked_keys: str | None,
    authorized: Callable[[], Sequence[AuthorizedKey]],
    home_of: Callable[[str], str | None],
    warn: Callable[[str], None],
) -> CertifiedLogin:
    """
    Whether C{certificate} logs C{user} in from C{peer_host} at C{now}, as sshd decides it
    (see the module's docstring); C{authorized} reads the user's authorized keys.

    @raise CertificateRefused: it does not; the message says why (the last reason found).
    """
    revoked = revocation_refusal(revoked_keys, certificate.key_blob, certificate)
    if revoked is not None:
        raise CertificateRefused(revoked)
    ca = verified_ca_key(certificate)
    key = _certified_key(certificate)
    reason = "certificate's CA is not trusted (TrustedUserCAKeys or a cert-authority line)"
    if trusted_user_ca_keys is not None:
        try:
            options = _by_trusted_ca(
                certificate,
                user,
                peer_host,
                now,
                trusted_user_ca_keys,
                principals_file,
                home_of,
                warn,
            )
        except CertificateRefused as e:
            reason = str(e)
        else:
            if options is not None:
                return CertifiedLogin(key, ca, options, f"TrustedUserCAKeys {trusted_user_ca_keys}")
    for entry in authorized():
        if not entry.signs(certificate.signature_key):
            continue
        try:
            options = _by_authority_line(certificate, entry, user, peer_host, now)
        except CertificateRefused as e:
            reason = f"{e} ({entry.source})"
            continue
        return CertifiedLogin(key, ca, options, entry.source)
    raise CertificateRefused(reason)
