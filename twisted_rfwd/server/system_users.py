"""The system's user and group database, as sshd reads it for AllowGroups and Match Group."""

from __future__ import annotations

import grp
import os
import pwd

__all__ = ["system_groups"]


def system_groups(user: str) -> tuple[str, ...] | None:
    """
    The groups of the system user C{user}, primary first, each once; None when C{user} is not a
    system user (rfwd's login names need not be).
    """
    try:
        entry = pwd.getpwnam(user)
        gids = os.getgrouplist(user, entry.pw_gid)
    except (KeyError, ValueError, OSError):
        return None
    names: list[str] = []
    for gid in gids:
        try:
            name = grp.getgrgid(gid).gr_name
        except KeyError:
            continue
        if name not in names:
            names.append(name)
    return tuple(names)
