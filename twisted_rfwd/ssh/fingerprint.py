"""Key fingerprints exactly as OpenSSH prints them (C{SHA256:} + unpadded base64)."""

from __future__ import annotations

from twisted.conch.ssh.keys import FingerprintFormats, Key


def fingerprint(key: Key) -> str:
    """C{SHA256:...}, comparable with the output of C{ssh-keygen -l}."""
    digest = str(key.fingerprint(format=FingerprintFormats.SHA256_BASE64)).rstrip("=")
    return f"SHA256:{digest}"
