"""
Who may log in at all, and by which methods: sshd's AllowUsers, DenyUsers, AllowGroups and
DenyGroups, and the methods the configuration offers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from twisted_rfwd.server.authorized_keys import (
    matches_from,
)
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.system_users import system_groups

__all__ = ["access_refusal", "auth_methods", "match_user"]


def _wildcard(pattern: str, text: str) -> bool:
    """sshd's C{match_pattern}: C{*} and C{?} only, case-sensitive, the whole of C{text}."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch("".join(parts), text, re.DOTALL) is not None


def match_user(user: str, host: str, pattern: str) -> bool:
    """
    sshd's C{match_user}: C{USER}, or C{USER@HOST} where C{HOST} is a comma-separated list of
    addresses, wildcards, CIDR blocks and C{!}negations, matched against the client's numeric
    address (sshd's C{UseDNS no}).  The last C{@} splits the two.
    """
    name, at, hosts = pattern.rpartition("@")
    if not at:
        return _wildcard(pattern, user)
    return _wildcard(name, user) and matches_from(tuple(hosts.split(",")), host)


def access_refusal(
    user: str,
    host: str,
    config: ServerConfig,
    groups_of: Callable[[str], Sequence[str] | None] = system_groups,
) -> str | None:
    """
    Why the access lists refuse C{user} from C{host}, in sshd's words, or None if they allow
    it.  sshd's order (C{allowed_user} in C{auth.c}): DenyUsers, AllowUsers, then the groups
    (only looked up when a group list is set): DenyGroups, AllowGroups.  A login name that is
    not a system user has no groups: AllowGroups refuses it, DenyGroups cannot match it (sshd,
    which has no such users, refuses a user without groups whichever list is set).
    """
    if any(match_user(user, host, pattern) for pattern in config.deny_users):
        return "listed in DenyUsers"
    if config.allow_users and not any(
        match_user(user, host, pattern) for pattern in config.allow_users
    ):
        return "not listed in AllowUsers"
    if not (config.deny_groups or config.allow_groups):
        return None
    groups = groups_of(user) or []
    if not groups and config.allow_groups:
        return "not in any group"
    if any(_wildcard(p, group) for p in config.deny_groups for group in groups):
        return "a group is listed in DenyGroups"
    if config.allow_groups and not any(
        _wildcard(p, group) for p in config.allow_groups for group in groups
    ):
        return "none of user's groups are listed in AllowGroups"
    return None


def auth_methods(config: ServerConfig) -> list[bytes]:
    """The methods C{config} enables, in the order sshd lists them."""
    enabled = [
        (config.pubkey_authentication, b"publickey"),
        (config.password_authentication, b"password"),
        (config.kbd_interactive_authentication, b"keyboard-interactive"),
    ]
    return [method for on, method in enabled if on]
