"""
Add a user to rfwd-server's password file, or change or remove their password::

    python -m twisted_rfwd.server.passwd /etc/rfwd-server/passwords alice
    rfwd-passwd /etc/rfwd-server/passwords alice          (the same, once installed)
    printf '%s\\n' "$PASSWORD" | rfwd-passwd /etc/rfwd-server/passwords alice

The password is asked for twice on the terminal (not echoed), or read from the first line of
standard input when that is not a terminal (for scripts) -- never from the command line, where
other users could read it with C{ps}.  The file gets a bcrypt hash (C{user:$2b$12$...}) in the
user's line, replaced where it was or added at the end; other lines stay as they are.  It is
written whole to a new file beside it (mode 0600, the old owner kept when run as root) that then
takes its place, so rfwd-server never reads half a file.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, NoReturn, TextIO

from twisted_rfwd.server.passwords import (
    DEFAULT_COST,
    MAXIMUM_PASSWORD,
    hash_password,
    invalid_user_name,
)

__all__ = ["PasswdError", "main", "set_password"]

# Exit statuses.
OK = 0
FAILED = 1
USAGE = 2


class PasswdError(Exception):
    """A problem to report in one line, without a traceback."""


class _UsageError(Exception):
    """A command line argparse refuses: the usage and the reason, for our stderr."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.format_usage()}{self.prog}: error: {message}")


def set_password(path: Path, user: str, hashed: bytes | None) -> bool:
    """
    Put C{user:hashed} in the file at C{path} (created if missing), replacing the user's line;
    with C{hashed} None, remove the user's lines.  Returns whether the user had a line before.
    """
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = b""
    except OSError as e:
        raise PasswdError(f"cannot read {path}: {e.strerror}") from None
    prefix = user.encode("utf-8") + b":"
    lines: list[bytes] = []
    found = False
    for line in old.splitlines():
        if not line.strip().startswith(prefix):
            lines.append(line)
        elif not found and hashed is not None:
            lines.append(prefix + hashed)
            found = True
        else:
            found = True
    if not found and hashed is not None:
        lines.append(prefix + hashed)
    _replace(path, b"".join(line + b"\n" for line in lines))
    return found


def _replace(path: Path, data: bytes) -> None:
    """Write C{data} to a new file (0600) beside C{path}, then rename it over C{path}."""
    directory = path.parent
    try:
        owner = os.stat(path)
    except OSError:
        owner = None
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
    except OSError as e:
        raise PasswdError(f"cannot write in {directory}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if owner is not None and os.geteuid() == 0:
                os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as e:
        os.unlink(temporary)
        raise PasswdError(f"cannot write {path}: {e.strerror}") from None
    try:
        directory_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory_fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is done
    finally:
        os.close(directory_fd)


def _read_password(
    user: str, stdin: BinaryIO, ask: Callable[[str], str], interactive: bool
) -> bytes:
    """The new password: asked twice on the terminal, else standard input's first line."""
    if interactive:
        first = ask(f"New password for {user}: ")
        if ask("Retype the password: ") != first:
            raise PasswdError("the passwords do not match")
        password = first.encode("utf-8")
    else:
        line = stdin.readline()
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
        password = line
    if not password:
        raise PasswdError("the password is empty")
    if len(password) > MAXIMUM_PASSWORD:
        raise PasswdError(f"the password is longer than bcrypt's {MAXIMUM_PASSWORD} bytes")
    return password


def _cost(text: str) -> int:
    try:
        cost = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: '{text}'") from None
    if not 4 <= cost <= 31:
        raise argparse.ArgumentTypeError("bcrypt's cost is from 4 to 31")
    return cost


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rfwd-passwd",
        description=(
            "Set USER's password in rfwd-server's password file (--password-hashes). The "
            "password is read from the terminal, or from standard input's first line when that "
            "is not a terminal."
        ),
    )
    parser.add_argument("file", type=Path, help="the password file; created if missing")
    parser.add_argument("user", help="the login name")
    parser.add_argument(
        "--cost",
        type=_cost,
        default=DEFAULT_COST,
        help=f"bcrypt's work factor, 4 to 31 (default {DEFAULT_COST})",
    )
    parser.add_argument(
        "--delete", action="store_true", help="remove USER's line instead; no password read"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    ask: Callable[[str], str] = getpass.getpass,
) -> int:
    """The command: 0 done, 1 a problem (one line on stderr), 2 a usage error."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    try:
        arguments = _parser().parse_args(argv)
    except _UsageError as e:
        print(e, file=stderr)
        return USAGE
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else USAGE
    user: str = arguments.user
    path: Path = arguments.file
    try:
        invalid = invalid_user_name(user)
        if invalid is not None:
            raise PasswdError(invalid)
        if arguments.delete:
            if not set_password(path, user, None):
                raise PasswdError(f"{user} has no line in {path}")
            print(f"Removed {user} from {path}", file=stdout)
            return OK
        password = _read_password(user, stdin, ask, stdin.isatty())
        replaced = set_password(path, user, hash_password(password, arguments.cost))
    except PasswdError as e:
        print(f"rfwd-passwd: {e}", file=stderr)
        return FAILED
    except (KeyboardInterrupt, EOFError):
        print("rfwd-passwd: cancelled; the file is unchanged", file=stderr)
        return FAILED
    print(f"{'Changed' if replaced else 'Added'} {user} in {path}", file=stdout)
    return OK


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
