"""
authorized_keys lines (parsed by L{twisted_rfwd.protocol.authorized_keys}) made into Conch keys,
which is what the login checker verifies signatures with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.conch.ssh.keys import Key

from twisted_rfwd.protocol.authorized_keys import (
    AuthorizedLine,
    KeyOptions,
    matches_from,
    parse_authorized_lines,
)

__all__ = ["AuthorizedKey", "KeyOptions", "matches_from", "parse_authorized_keys"]


@dataclass(frozen=True)
class AuthorizedKey:
    key: Key = field(compare=False)
    options: KeyOptions
    source: str

    def matches(self, blob: bytes) -> bool:
        """Whether a plain public key (its blob) is this line's key; never for a CA's line."""
        return not self.options.cert_authority and bool(self.key.blob() == blob)

    def signs(self, ca_blob: bytes) -> bool:
        """Whether this is a C{cert-authority} line for the CA key C{ca_blob}."""
        return self.options.cert_authority and bool(self.key.blob() == ca_blob)


def parse_authorized_keys(text: bytes, path: str) -> tuple[list[AuthorizedKey], list[str]]:
    """
    Parse a whole file.  Returns the usable keys and, for every line that is not usable,
    a warning of the form C{path line N: reason}.
    """
    lines, warnings = parse_authorized_lines(text, path)
    keys: list[AuthorizedKey] = []
    for line in lines:
        try:
            key = _load(line)
        except ValueError as e:
            warnings.append((line.number, f"{line.source}: unusable key: {e}"))
            continue
        keys.append(AuthorizedKey(key, line.options, line.source))
    # Warnings in file order, whichever step found them.
    return keys, [text for _, text in sorted(warnings, key=lambda w: w[0])]


def _load(line: AuthorizedLine) -> Key:
    try:
        key: Key = Key.fromString(line.blob)
    except Exception as e:  # Conch's parser raises anything on a corrupt key
        raise ValueError(str(e) or type(e).__name__) from None
    # Conch reads lengths leniently (a truncated RSA modulus parses as a different, shorter
    # one), so insist the key is what the line says, byte for byte.
    if key.sshType() != line.key_type.encode("ascii") or key.blob() != line.blob:
        raise ValueError(f"the {line.key_type} key data is corrupt")
    return key
