"""systemd's notify protocol (sd_notify(3)) spoken directly, without libsystemd.

systemd starts a `Type=notify` service with `NOTIFY_SOCKET` naming a datagram socket. The
service says READY=1 once it serves, RELOADING=1 and STOPPING=1 around a reload and a shutdown,
STATUS=... for `systemctl status`, and WATCHDOG=1 more often than `WatchdogSec`, or systemd
restarts it. Each message is one datagram of newline-separated KEY=VALUE lines. The protocol is
small and stable, so a few lines here beat a C library that needs headers at install time.

Notifying is best effort. The daemon must keep working where no systemd listens (a terminal, a
container, a test) or where its socket disappeared, so a failed send never raises: it returns
False and logs one warning per outage. Only a programming error (an invalid field name) raises.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType

import structlog

log = structlog.get_logger("propready.systemd")

# A value is one line of a KEY=VALUE block, and systemd shows STATUS in one line of
# `systemctl status`: a few hundred characters say everything worth saying there.
MAX_VALUE_CHARS = 500
# PID 1 reads the socket promptly; a send that waits longer than this means systemd is wedged,
# and the daemon's own thread (often the watchdog heartbeat) must not hang with it.
SEND_TIMEOUT_SECONDS = 2.0

_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_LINE_BREAKS = re.compile(r"[\r\n]+")


class SystemdNotifier:
    """Sends sd_notify messages to systemd over one datagram socket, from any thread.

    Build it with `from_environ()` in the daemon. When `NOTIFY_SOCKET` is unset (or names a
    socket type we do not speak, such as `vsock:`), `enabled` is False and every call is a no-op
    that returns False, so callers never need to ask whether systemd is there.
    """

    def __init__(self, address: str | None, *, watchdog_seconds: float | None = None) -> None:
        """`address` is NOTIFY_SOCKET's value: a path, or `@name` for Linux's abstract namespace.

        `watchdog_seconds` is how often systemd expects WATCHDOG=1 (None: no watchdog).
        """
        self.watchdog_seconds = watchdog_seconds
        self._address = address
        self._target = _socket_target(address)
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._failing = False
        if self._target is not None:
            try:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            except OSError as exc:
                log.warning("systemd_notify_unavailable", socket=address, error=_describe(exc))
            else:
                self._socket.settimeout(SEND_TIMEOUT_SECONDS)

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, pid: int | None = None
    ) -> SystemdNotifier:
        """The notifier systemd asked for through the environment (`os.environ` by default).

        The watchdog applies only to the process systemd names in WATCHDOG_PID (when set): a
        child that inherited the variables must not think it feeds the watchdog. The variables
        stay in the environment; nothing here unsets them.
        """
        env = os.environ if environ is None else environ
        own_pid = os.getpid() if pid is None else pid
        return cls(
            env.get("NOTIFY_SOCKET") or None,
            watchdog_seconds=_watchdog_seconds(env, own_pid),
        )

    @property
    def enabled(self) -> bool:
        """True when NOTIFY_SOCKET is set to a socket we can send to and close() was not called."""
        return self._socket is not None

    def ready(self, status: str | None = None) -> bool:
        """Start-up or a reload finished: systemd marks the service active (READY=1)."""
        return self._send_fields(_with_status({"READY": "1"}, status))

    def status(self, text: str) -> bool:
        """The one-line status `systemctl status` shows (STATUS=...)."""
        return self._send_fields({"STATUS": text})

    def watchdog(self) -> bool:
        """Prove liveness to systemd's watchdog (WATCHDOG=1)."""
        return self._send_fields({"WATCHDOG": "1"})

    def reloading(self, status: str | None = None) -> bool:
        """A reload starts (RELOADING=1); send ready() when it is done.

        MONOTONIC_USEC is the moment of this message on CLOCK_MONOTONIC. `Type=notify-reload`
        needs it to tell this reload from an earlier one, and older systemd ignores it.
        """
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        fields = {"RELOADING": "1", "MONOTONIC_USEC": str(monotonic_usec)}
        return self._send_fields(_with_status(fields, status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown starts (STOPPING=1), so systemd reports "deactivating" instead of a crash."""
        return self._send_fields(_with_status({"STOPPING": "1"}, status))

    def send(self, **fields: str) -> bool:
        """Any KEY=VALUE fields in one datagram, in the order given (e.g. EXTEND_TIMEOUT_USEC).

        Raises ValueError for a field name that is not upper-case letters, digits and `_`: that
        is a bug in the caller, not a condition of the host.
        """
        return self._send_fields(fields)

    def close(self) -> None:
        """Close the socket; later calls are no-ops returning False. Safe to repeat."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send_fields(self, fields: Mapping[str, str]) -> bool:
        if not fields:
            raise ValueError("an sd_notify message needs at least one field")
        lines = []
        for name, value in fields.items():
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"invalid sd_notify field name {name!r}")
            lines.append(f"{name}={one_line(value)}")
        message = "\n".join(lines).encode("utf-8")
        # One lock for the socket and the outage flag: several threads (jobs, the heartbeat,
        # a reload) notify at once, and the warning must be logged once, not once per thread.
        with self._lock:
            if self._socket is None or self._target is None:
                return False
            try:
                self._socket.sendto(message, self._target)
            except OSError as exc:
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "systemd_notify_failed",
                        socket=self._address,
                        error=_describe(exc),
                        hint="systemd will not see status or watchdog pings until this recovers",
                    )
                return False
            if self._failing:
                self._failing = False
                log.info("systemd_notify_recovered", socket=self._address)
            return True


def one_line(text: str) -> str:
    """`text` as one notify value: line breaks become spaces, at most MAX_VALUE_CHARS long.

    A raw newline would end the field and start a new one, so an error message quoted in a
    STATUS could otherwise smuggle in, say, a READY=1 or a STOPPING=1.
    """
    flat = _LINE_BREAKS.sub(" ", text)
    if len(flat) > MAX_VALUE_CHARS:
        flat = flat[: MAX_VALUE_CHARS - 1] + "…"
    return flat


def _with_status(fields: dict[str, str], status: str | None) -> dict[str, str]:
    if status is not None:
        fields["STATUS"] = status
    return fields


def _socket_target(address: str | None) -> str | None:
    """The sendto() address for NOTIFY_SOCKET, or None when there is none we can use."""
    if not address:
        return None
    if address.startswith("@"):
        # Linux's abstract namespace: the name starts with a NUL byte and has no file.
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    # systemd also hands out `vsock:CID:PORT` (to virtual machines); a service on a host never
    # gets one, so say so once instead of carrying a second transport.
    log.warning("systemd_notify_unsupported_socket", socket=address)
    return None


def _watchdog_seconds(environ: Mapping[str, str], pid: int) -> float | None:
    """WATCHDOG_USEC in seconds when the watchdog is meant for `pid`; None when off or garbled."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not _DIGITS.fullmatch(usec) or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and (not _DIGITS.fullmatch(owner) or int(owner) != pid):
        return None
    return int(usec) / 1_000_000


def _describe(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"
