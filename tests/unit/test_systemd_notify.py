"""The sd_notify protocol against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from propready.runtime.notify import MAX_VALUE_CHARS, SystemdNotifier


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A listening datagram socket where systemd's would be, and its path."""
    path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(5)
    yield listener, path
    listener.close()


def received(listener: socket.socket) -> str:
    return listener.recv(4096).decode("utf-8")


def nothing_waiting(listener: socket.socket) -> bool:
    listener.settimeout(0)  # a socket with a timeout would wait despite MSG_DONTWAIT
    try:
        listener.recv(4096)
    except BlockingIOError:
        return True
    finally:
        listener.settimeout(5)
    return False


def test_messages_are_the_exact_protocol_datagrams(systemd: tuple[socket.socket, str]) -> None:
    """ready, status, watchdog and stopping each send one datagram of KEY=VALUE lines."""
    listener, path = systemd
    with SystemdNotifier.from_environ({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.enabled
        assert notifier.ready() is True
        assert received(listener) == "READY=1"
        assert notifier.ready(status="started; mode live") is True
        assert received(listener) == "READY=1\nSTATUS=started; mode live"
        assert notifier.status("poll at 12:00:00Z: 3 rows") is True
        assert received(listener) == "STATUS=poll at 12:00:00Z: 3 rows"
        assert notifier.watchdog() is True
        assert received(listener) == "WATCHDOG=1"
        assert notifier.stopping(status="stopping on SIGTERM") is True
        assert received(listener) == "STOPPING=1\nSTATUS=stopping on SIGTERM"
        assert notifier.send(EXTEND_TIMEOUT_USEC="5000000", STATUS="draining") is True
        assert received(listener) == "EXTEND_TIMEOUT_USEC=5000000\nSTATUS=draining"


def test_reloading_carries_the_monotonic_clock_in_microseconds(
    systemd: tuple[socket.socket, str],
) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC: CLOCK_MONOTONIC at sending, as Type=notify-reload needs."""
    listener, path = systemd
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading(status="reloading rules") is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = received(listener).split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].removeprefix("MONOTONIC_USEC=")) <= after
    assert lines[2:] == ["STATUS=reloading rules"]
    assert notifier.reloading() is True
    assert [line.split("=")[0] for line in received(listener).split("\n")] == [
        "RELOADING",
        "MONOTONIC_USEC",
    ]
    notifier.close()


def test_abstract_namespace_socket_is_reached_through_the_at_sign() -> None:
    """NOTIFY_SOCKET=@name means Linux's abstract namespace: a leading NUL byte, no file."""
    name = f"propready-test-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)
    listener.settimeout(5)
    try:
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready() is True
        assert received(listener) == "READY=1"
        notifier.close()
    finally:
        listener.close()


def test_status_with_line_breaks_stays_one_field(systemd: tuple[socket.socket, str]) -> None:
    """Newlines in a status become spaces, so an error text cannot inject READY=1 or STOPPING=1."""
    listener, path = systemd
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.status("poll failed: timeout\nREADY=1\r\nSTOPPING=1") is True
    assert received(listener) == "STATUS=poll failed: timeout READY=1 STOPPING=1"
    assert notifier.ready(status="x" * 2000) is True
    ready, status = received(listener).split("\n")
    assert ready == "READY=1"
    assert len(status.removeprefix("STATUS=")) == MAX_VALUE_CHARS
    notifier.close()


def test_watchdog_interval_comes_from_watchdog_usec() -> None:
    """WATCHDOG_USEC in seconds, when WATCHDOG_PID is unset or names this process."""
    assert SystemdNotifier.from_environ({"WATCHDOG_USEC": "120000000"}).watchdog_seconds == 120.0
    own = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier.from_environ(own).watchdog_seconds == 30.0
    given_pid = {"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": "4242"}
    assert SystemdNotifier.from_environ(given_pid, pid=4242).watchdog_seconds == 1.5


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    """A child that inherited WATCHDOG_USEC with someone else's WATCHDOG_PID has no watchdog."""
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}
    assert SystemdNotifier.from_environ(env, pid=4243).watchdog_seconds is None


@pytest.mark.parametrize(
    "env",
    [
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "1_000_000"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"},
        {},
    ],
)
def test_absent_or_garbled_watchdog_settings_mean_no_watchdog(env: dict[str, str]) -> None:
    """An unparsable, zero or missing WATCHDOG_USEC (or WATCHDOG_PID) gives watchdog_seconds None."""
    assert SystemdNotifier.from_environ(env, pid=1).watchdog_seconds is None


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    """Outside systemd (a terminal, a test) the notifier is disabled and returns False quietly."""
    for env in ({}, {"NOTIFY_SOCKET": ""}):
        notifier = SystemdNotifier.from_environ(env)
        assert notifier.enabled is False
        with structlog.testing.capture_logs() as logs:
            assert notifier.ready(status="started") is False
            assert notifier.status("idle") is False
            assert notifier.watchdog() is False
            assert notifier.reloading() is False
            assert notifier.stopping() is False
            assert notifier.send(STATUS="x") is False
        assert logs == []


def test_unsupported_socket_kind_disables_with_a_warning() -> None:
    """A vsock: address (only given to virtual machines) is not spoken: disabled, said once."""
    with structlog.testing.capture_logs() as logs:
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"})
        assert notifier.ready() is False
    assert notifier.enabled is False
    assert [entry["event"] for entry in logs] == ["systemd_notify_unsupported_socket"]


def test_vanished_socket_returns_false_and_warns_once(
    systemd: tuple[socket.socket, str],
) -> None:
    """If systemd's socket goes away, calls return False without raising, with one warning."""
    listener, path = systemd
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.ready() is True
    listener.close()
    os.unlink(path)
    with structlog.testing.capture_logs() as logs:
        assert notifier.watchdog() is False
        assert notifier.status("still here") is False
        assert notifier.watchdog() is False
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [
        ("systemd_notify_failed", "warning")
    ]
    assert "FileNotFoundError" in logs[0]["error"]
    assert notifier.enabled  # it keeps trying: systemd may come back (daemon-reexec)
    notifier.close()


def test_socket_that_comes_back_is_used_again(tmp_path: Path) -> None:
    """After an outage the next successful send logs the recovery, and a new outage warns again."""
    path = str(tmp_path / "notify")
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    with structlog.testing.capture_logs() as logs:
        assert notifier.watchdog() is False  # nobody listens yet
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(path)
        listener.settimeout(5)
        assert notifier.watchdog() is True
        assert received(listener) == "WATCHDOG=1"
        listener.close()
        os.unlink(path)
        assert notifier.watchdog() is False
    assert [entry["event"] for entry in logs] == [
        "systemd_notify_failed",
        "systemd_notify_recovered",
        "systemd_notify_failed",
    ]
    notifier.close()


def test_closed_notifier_sends_nothing(systemd: tuple[socket.socket, str]) -> None:
    """After close() calls return False and nothing reaches the socket; close() may repeat."""
    listener, path = systemd
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    notifier.close()
    notifier.close()
    assert notifier.enabled is False
    assert notifier.ready() is False
    assert nothing_waiting(listener)


def test_invalid_field_name_is_a_programming_error(systemd: tuple[socket.socket, str]) -> None:
    """send() refuses a field name systemd would not parse, instead of sending garbage."""
    listener, path = systemd
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    with pytest.raises(ValueError, match="field name"):
        notifier.send(status="lower case")
    with pytest.raises(ValueError, match="at least one field"):
        notifier.send()
    assert nothing_waiting(listener)
    notifier.close()


def test_threads_share_one_socket_without_mixing_messages(
    systemd: tuple[socket.socket, str],
) -> None:
    """Calls from many threads at once each arrive as one whole datagram."""
    listener, path = systemd
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    results: list[bool] = []
    messages: list[str] = []
    # Read while they send: the kernel queues only a few datagrams per socket (max_dgram_qlen).
    reader = threading.Thread(target=lambda: messages.extend(received(listener) for _ in range(80)))
    reader.start()

    def ping(index: int) -> None:
        for round_ in range(10):
            results.append(notifier.status(f"thread {index} round {round_}"))

    threads = [threading.Thread(target=ping, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in [*threads, reader]:
        thread.join()
    assert results == [True] * 80
    assert sorted(messages) == sorted(
        f"STATUS=thread {index} round {round_}" for index in range(8) for round_ in range(10)
    )
    assert nothing_waiting(listener)
    notifier.close()


def test_environment_is_left_alone(systemd: tuple[socket.socket, str]) -> None:
    """Reading the variables does not unset them (unlike sd_notify's unset_environment)."""
    _listener, path = systemd
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "7"}
    SystemdNotifier.from_environ(env, pid=7).close()
    assert env == {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "7"}
