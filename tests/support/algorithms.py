"""The cipher and MAC pairs the algorithm tests run, in memory and against OpenSSH."""

from __future__ import annotations

__all__ = ["AEAD", "SUITES", "suite_name"]

SUITES = [
    ("aes128-gcm@openssh.com", "hmac-sha2-256-etm@openssh.com"),
    ("aes256-gcm@openssh.com", "hmac-sha2-256-etm@openssh.com"),
    ("chacha20-poly1305@openssh.com", "hmac-sha2-256-etm@openssh.com"),
    ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
    ("aes128-ctr", "hmac-sha2-512-etm@openssh.com"),
    ("aes192-ctr", "hmac-sha2-256"),
    ("aes256-ctr", "hmac-sha2-512"),
]
# Ciphers with their own authentication: the MAC negotiated beside them is not used.
AEAD = {"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"}


def suite_name(cipher: str, mac: str) -> str:
    """A test-method-safe name for one pair."""
    return (cipher + "_" + mac).replace("@openssh.com", "").replace("-", "_")
