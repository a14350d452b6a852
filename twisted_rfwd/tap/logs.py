"""
The plugins' logging: C{-v}, C{--log-level}, C{--log-format}, and the observer twistd writes
with, which no peer can make write payload bytes.

twistd builds its log observer after C{makeService}, from the application's C{ILogObserver}
component if it has one (L{twisted.application.app.AppLogger.start}); L{LoggedService} wraps
the plugin's service and sets that component when twistd adds it to the application.  The file
is the one twistd would use (C{--logfile}, C{-} or C{-n} for stdout, else C{twistd.log};
C{--syslog}); twistd's own C{--logger} still replaces everything.
"""

from __future__ import annotations

import ast
import functools
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from twisted.application.service import IService, MultiService
from twisted.logger import (
    ILogObserver,
    LegacyLogObserverWrapper,
    LogEvent,
    LogLevel,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.python import usage
from twisted.python.logfile import LogFile
from zope.interface import implementer

__all__ = [
    "LEVELS",
    "USAGE_ERROR_STATUS",
    "LogOptions",
    "LoggedService",
    "SafeObserver",
    "conch_formats",
    "usage_error_line",
    "version_line",
]

LEVELS = {
    "critical": LogLevel.critical,
    "error": LogLevel.error,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "info": LogLevel.info,
    "debug": LogLevel.debug,
}
FORMATS = ("text", "json")
_ORDER = [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical]

# The longest field value (in characters) a line shows: a peer-chosen string (an address, a
# user name, a reason) is cut there, so no line grows with what a peer sent.  Our own longest
# messages (a changed host key, with what to do) are about 600 characters.
MAX_FIELD = 1024


class LogOptions(usage.Options):
    """
    The options both plugins share (logging, C{--version}) and their way of failing: a base
    class of their L{usage.Options}.

    Under twistd, a usage error is one line naming the problem and exit status 255, as ssh
    does (twistd itself would print the whole usage, then the message, and exit 1); C{--help}
    still prints the whole usage.  Parsed outside twistd (an embedding program, a test), it is
    a L{usage.UsageError} as usual.
    """

    def __init__(self) -> None:
        super().__init__()
        self["log-level"] = LogLevel.info
        self["log-format"] = "text"

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            sys.stderr.write(usage_error_line(self.command_name(), str(e)) + "\n")
            sys.stderr.flush()
            raise SystemExit(USAGE_ERROR_STATUS) from None

    def command_name(self) -> str:
        """The plugin's name as twistd was given it (C{rfwd-client}), for messages."""
        return (self.parent.subCommand if self.parent is not None else None) or "twistd"

    def opt_version(self) -> None:
        """Print the versions of twisted-rfwd, Twisted and cryptography, and exit."""
        print(version_line(self.command_name()))
        raise SystemExit(0)

    def opt_verbose(self) -> None:
        """Log at debug level (the same as --log-level debug)."""
        self["log-level"] = LogLevel.debug

    opt_v = opt_verbose

    def opt_log_level(self, name: str) -> None:
        """Least severe level logged: critical, error, warn, info or debug [default: info]."""
        level = LEVELS.get(name.lower())
        if level is None:
            raise usage.UsageError(
                f"--log-level must be critical, error, warn, info or debug, not '{name}'"
            )
        self["log-level"] = level

    def opt_log_format(self, name: str) -> None:
        """text (twistd's lines) or json (one JSON event per line) [default: text]."""
        if name.lower() not in FORMATS:
            raise usage.UsageError(f"--log-format must be text or json, not '{name}'")
        self["log-format"] = name.lower()


# ssh's exit status for every failure, usage errors included.
USAGE_ERROR_STATUS = 255


def usage_error_line(command: str, message: str) -> str:
    """ssh's form: the command, the problem, on one line (C{rfwd-client: bad port '0' ...})."""
    first = " ".join(message.split())
    return f"{command}: {first} (see --help)"


def version_line(command: str) -> str:
    """C{rfwd-client (twisted-rfwd 0.1.0), Twisted 26.10.0, cryptography 44.0.0}."""
    import cryptography

    import twisted
    from twisted_rfwd import __version__

    return (
        f"{command} (twisted-rfwd {__version__}), Twisted {twisted.__version__}, "
        f"cryptography {cryptography.__version__}"
    )


@implementer(ILogObserver)
class SafeObserver:
    """
    Passes on the events at C{level} or above, with no payload in them.

    Conch's own lines are dropped at every level (a logged failure, a bug, is kept).  Many of
    them interpolate what the peer sent: packet payloads as C{b'...'} reprs at debug level and,
    for unknown messages of a running service, at info; the peer's disconnect reason and debug
    messages; and the rest is per-connection chatter ("connection lost", "cannot find moduli
    file") that our own lines already say better, with the peer's address.  They are known by
    their format strings, not their namespace: Conch's classes log through C{self._log}, so
    their lines carry the namespace of our subclasses.  Every event, ours included, then has
    its C{bytes} fields replaced by their length and its strings cut at L{MAX_FIELD}
    characters: no level ever writes payload bytes, and no line grows with what a peer sent.

    ClientService's own "Scheduling retry N to connect ..." is dropped too: the client says
    why the attempt failed and when the next one is, in its own lines.
    """

    def __init__(self, observer: ILogObserver, level: LogLevel = LogLevel.info) -> None:
        self.observer = observer
        self.level = level
        self._least = _ORDER.index(level)
        self._conch = conch_formats()

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level", LogLevel.info)
        if level in _ORDER and _ORDER.index(level) < self._least:
            return
        if "log_failure" not in event and (self._from_conch(event) or _retry_notice(event)):
            return
        self.observer(_bounded(event))

    def _from_conch(self, event: LogEvent) -> bool:
        namespace = event.get("log_namespace") or ""
        return namespace.startswith("twisted.conch") or event.get("log_format") in self._conch


def _retry_notice(event: LogEvent) -> bool:
    """ClientService's line about its next attempt (info; its warnings are kept)."""
    namespace = event.get("log_namespace") or ""
    return namespace.startswith(_CLIENT_SERVICE) and event.get("log_level") is LogLevel.info


# Where ClientService logs from (twisted.application.internet re-exports it).
_CLIENT_SERVICE = "twisted.application._client_service"


def _bounded(event: LogEvent) -> LogEvent:
    """The event with bytes fields replaced by their length and long strings cut."""
    changed: dict[str, Any] = {}
    for key, value in event.items():
        if key.startswith("log_"):
            continue
        if isinstance(value, (bytes, bytearray, memoryview)):
            changed[key] = _Omitted(len(value))
        elif isinstance(value, str) and len(value) > MAX_FIELD:
            changed[key] = f"{value[:MAX_FIELD]}... ({len(value)} characters)"
    return {**event, **changed} if changed else event


class _Omitted(str):
    """What is logged instead of bytes: their length, the same with C{!r} and C{!s}."""

    def __new__(cls, length: int) -> _Omitted:
        return super().__new__(cls, f"<{length} bytes>")

    def __repr__(self) -> str:
        return str(self)


@functools.cache
def conch_formats() -> frozenset[str]:
    """
    The format strings Conch's SSH modules log with (C{self._log.debug("...")} and the like),
    read from their source once per process.  Reading them keeps the list right for the
    installed Conch; a module without source contributes nothing.
    """
    import twisted.conch.ssh

    found: set[str] = set()
    methods = {"debug", "info", "warn", "error", "critical", "failure", "emit"}
    for path in sorted(Path(twisted.conch.ssh.__file__).parent.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in methods
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "_log"
            ):
                continue
            for argument in node.args[:2]:
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    found.add(argument.value)
    return frozenset(found)


class LoggedService(MultiService):
    """
    The plugin's service, inside one that installs our log observer as the application's
    C{ILogObserver} when twistd adds it to the application (before twistd starts logging).
    """

    def __init__(self, service: IService, options: usage.Options) -> None:
        super().__init__()
        self.options = options
        service.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        twistd = getattr(self.options, "parent", None)
        if twistd is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, make_observer(self.options, twistd))
        super().setServiceParent(parent)


def make_observer(options: Mapping[str, Any], twistd: Mapping[str, Any]) -> ILogObserver:
    """Our observer, writing where twistd's options say twistd would write."""
    base: ILogObserver
    if twistd.get("syslog"):
        from twisted.python import syslog

        legacy: Any = syslog.SyslogObserver(twistd.get("prefix") or "").emit
        base = LegacyLogObserverWrapper(legacy)
    else:
        out = _log_file(twistd)
        if options["log-format"] == "json":
            base = jsonFileLogObserver(out, recordSeparator="")
        else:
            base = textFileLogObserver(out)
    return SafeObserver(base, options["log-level"])


def _log_file(twistd: Mapping[str, Any]) -> IO[Any]:
    """As twistd's C{UnixAppLogger} chooses: stdout, or a C{LogFile} that SIGUSR1 rotates."""
    name = twistd.get("logfile") or ""
    daemon = not twistd.get("nodaemon", True)
    if name == "-":
        if daemon:
            sys.exit("Daemons cannot log to stdout, exiting!")
        return sys.stdout
    if not name and not daemon:
        return sys.stdout
    log_file = LogFile.fromFullPath(name or "twistd.log")
    out: IO[Any] = log_file
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(number: int, frame: object) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    return out
