"""`python -m propready.demo.run`: the README's demo, end to end on real processes.

It builds a small PM database (a Yardi-style `unit` table), writes a demo config, starts
`propready sandbox` on a free loopback port, migrates the state database, and starts the real
daemon, `propready run` (polls every 2 s, sends every second, metrics on a free loopback port,
its log in `daemon.log`). Once the daemon's first poll is recorded in the state database it moves
homes to "Vacant Unrented Ready" and enters construction-final dates in a few rounds, each time
waiting until the daemon has polled the change. When every order the daemon planned has a final
answer, it scrapes `/metrics` and `/healthz`, stops the daemon with SIGTERM (exit 0 required),
and prints what was ordered and why, read back from the audit log.

The order lifecycle runs too: `propready serve` receives the sandbox's webhooks (the sandbox
walks each order through the vendor's statuses every AUTO_ADVANCE_SECONDS, `--auto-advance`),
the daemon's apply_news job applies them, and the demo waits until every placed order is
delivered, then prints each order's links and photo count. The write-back closes the loop: the
demo's `[writeback]` fills a new `unit.sphotosurl` column of the demo PM database with each
delivered order's photo link (once per order), and the demo prints the links read back from it.

A step that fails or times out stops the daemon and the sandbox, shows the end of the daemon's
log and exits 1 with what went wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from propready.adapters.store import properties
from propready.adapters.store.deliverables import deliverables_for
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.schema import audit_log, orders, readiness_event, writeback_outbox
from propready.core.audit_kinds import AuditKind
from propready.core.orders import OrderState
from propready.demo.pm_database import (
    DEMO_SOURCE_QUERY,
    advance_demo_pm_database,
    create_demo_pm_database,
    describe_demo_pm_database,
)
from propready.demo.writeback import COLUMN, photo_links, prepare_demo_writeback
from propready.service.checkpoints import CHECKPOINT

DEMO_TIMEZONE = "America/Denver"
POLL_SECONDS = 2
STARTUP_TIMEOUT = 30.0  # imports, migrations check, recovery, first poll
POLL_TIMEOUT = 15.0  # a few poll intervals
SETTLE_TIMEOUT = 30.0  # every planned order sent and answered
STOP_TIMEOUT = 60.0  # SIGTERM to exit
AUTO_ADVANCE_SECONDS = 0.3  # the sandbox moves each order one status along this often
DELIVERY_TIMEOUT = 60.0  # every placed order delivered through webhooks
# Loopback only, for the demo only: not a secret.
DEMO_WEBHOOK_TOKEN = "demo-webhook-token-not-a-secret-0123"  # noqa: S105
LOG_TAIL_LINES = 40
# Orders still on their way; every other state is an answer (placed, rejected, unknown, ...).
IN_FLIGHT = (OrderState.PLANNED, OrderState.SENDING)

CONFIG_TEMPLATE = """\
# Written by the propready demo. Paths are relative to this file.
[state]
url = "sqlite:///state.db"

[source]
url = "sqlite:///pm.db"
timezone = "{timezone}"
poll_interval_seconds = {poll_seconds}
query = \"\"\"
{query}
\"\"\"

[rules]
path = "{rules}"

[orders]
mode = "live"
duplicate_window_hours = 72
first_sight = "ignore"

[planomatic]
# base_url comes from PROPREADY_PLANOMATIC__BASE_URL: the sandbox picks a free port.
api_key = "sandbox-key"
requests_per_minute = 600
timeout_seconds = 10

[daemon]
instance_name = "demo"
send_interval_seconds = 1
stop_timeout_seconds = 20

[metrics]
listen = "127.0.0.1:{metrics_port}"

[webhooks]
listen = "127.0.0.1:{webhook_port}"
token = "{webhook_token}"

[log]
format = "console"
level = "info"
"""

T = TypeVar("T")


class DemoFailed(Exception):
    """A demo step failed or timed out; the message says which and why."""


def _example_rules() -> Path:
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent.parent / "rules", package / "example_rules"):
        if candidate.is_dir():
            return candidate
    raise DemoFailed("cannot find the example rules folder")


def _free_loopback_port() -> int:
    # The port is free now; another process could take it before the daemon binds it, which on
    # a developer's machine within a second is unlikely enough for a demo.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _demo_environment(config: Path) -> dict[str, str]:
    """The caller's environment without anything that would redirect the demo's processes."""
    # PROPREADY_* variables from the caller's shell would override the demo config, and a
    # NOTIFY_SOCKET inherited from a systemd unit would make the daemon report to that unit.
    dropped = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PROPREADY_") and name not in dropped
    }
    env["PROPREADY_CONFIG"] = str(config)
    return env


def _propready(*args: str, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "propready", "--config", env["PROPREADY_CONFIG"], *args]
    # Our own interpreter and fixed arguments: nothing untrusted reaches the command line.
    completed = subprocess.run(command, env=env, check=False)  # noqa: S603
    if completed.returncode != 0:
        raise DemoFailed(f"propready {' '.join(args)} failed (exit {completed.returncode})")


def _spawn(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            [sys.executable, "-m", "propready", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _start_sandbox(
    workdir: Path, env: dict[str, str], webhook_url: str
) -> tuple[subprocess.Popen[bytes], str]:
    url_file = workdir / "sandbox.url"
    url_file.unlink(missing_ok=True)
    process = _spawn(
        [
            "sandbox",
            "--port",
            "0",
            "--url-file",
            str(url_file),
            "--webhook-url",
            webhook_url,
            "--webhook-retry-seconds",
            "1",
            "--auto-advance",
            str(AUTO_ADVANCE_SECONDS),
        ],
        workdir / "sandbox.log",
        env,
    )
    try:
        return process, _wait_for(
            "the sandbox to listen",
            lambda: url_file.read_text().strip() if url_file.exists() else None,
            timeout=20,
            process=process,
            name="the sandbox",
        )
    except DemoFailed as exc:
        _stop(process, grace=5)
        raise DemoFailed(f"{exc}; see {workdir / 'sandbox.log'}") from None


def _wait_for(
    what: str,
    ready: Callable[[], T | None],
    *,
    timeout: float,
    process: subprocess.Popen[bytes],
    name: str = "the daemon",
) -> T:
    """Call `ready` until it returns something; fail if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        code = process.poll()
        if code is not None:
            raise DemoFailed(f"{name} exited (code {code}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes], *, grace: float) -> int | None:
    """SIGTERM, then SIGKILL after `grace` seconds; the exit code (None if it had to be killed)."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def _successful_poll_started_after(state: sa.Engine, moment: datetime) -> datetime | None:
    """When the daemon's last poll started, if it started after `moment` and succeeded."""
    with state.connect() as connection:
        checkpoint = properties.load_checkpoint(connection, CHECKPOINT)
    started: datetime | None = checkpoint.last_poll_at
    succeeded: datetime | None = checkpoint.last_success_at
    # A failed poll moves last_poll_at alone; a successful one writes both, success last. A poll
    # that started after `moment` began reading the PM database after the change was committed.
    if started is None or succeeded is None or succeeded < started or started <= moment:
        return None
    return started


def _counts(state: sa.Engine) -> tuple[int, int]:
    """(readiness events, orders) in the state database so far."""
    with state.connect() as connection:
        events = connection.execute(sa.select(sa.func.count()).select_from(readiness_event))
        created = connection.execute(sa.select(sa.func.count()).select_from(orders))
        return int(events.scalar_one()), int(created.scalar_one())


def _orders_settled(state: sa.Engine) -> bool:
    with state.connect() as connection:
        waiting = connection.execute(
            sa.select(sa.func.count()).select_from(orders).where(orders.c.state.in_(IN_FLIGHT))
        ).scalar_one()
    return int(waiting) == 0


def _await_poll(
    state: sa.Engine, daemon: subprocess.Popen[bytes], since: datetime, timeout: float
) -> None:
    before = _counts(state)
    started = _wait_for(
        "the daemon's next successful poll",
        lambda: _successful_poll_started_after(state, since),
        timeout=timeout,
        process=daemon,
    )
    events, created = _counts(state)
    print(
        f"   daemon polled at {started:%H:%M:%S}Z: {events - before[0]} readiness events, "
        f"{created - before[1]} orders planned"
    )


def _show_metrics(base_url: str) -> None:
    """Scrape /metrics once and print the order and vendor-call series, then /healthz."""
    with httpx.Client(base_url=base_url, timeout=5, trust_env=False) as client:
        try:
            scraped = client.get("/metrics")
            health = client.get("/healthz")
        except httpx.HTTPError as exc:
            raise DemoFailed(f"cannot read {base_url}/metrics: {exc}") from exc
    if scraped.status_code != 200:
        raise DemoFailed(f"{base_url}/metrics answered HTTP {scraped.status_code}")
    wanted = ("propready_orders", "propready_vendor_calls_total", "propready_healthy")
    print(f"\n== {base_url}/metrics (a few series; zeros left out) ==")
    for family in text_string_to_metric_families(scraped.text):
        for sample in family.samples:
            if sample.name in wanted and sample.value:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                series = f"{sample.name}{{{labels}}}" if labels else sample.name
                print(f"{series} {sample.value:g}")
    try:
        verdict = health.json()
        summary = f"status {verdict.get('status')!r}, problems {verdict.get('problems')}"
    except ValueError:
        summary = health.text.strip()
    print(f"GET /healthz -> HTTP {health.status_code}: {summary}")


def _start_serve(workdir: Path, env: dict[str, str], base_url: str) -> subprocess.Popen[bytes]:
    """`propready serve`, the webhook receiver, once its /healthz answers 200."""
    process = _spawn(["--config", env["PROPREADY_CONFIG"], "serve"], workdir / "serve.log", env)

    def healthy() -> bool:
        try:
            return httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait_for("the webhook receiver", healthy, timeout=20, process=process, name="serve")
    except DemoFailed as exc:
        _stop(process, grace=5)
        raise DemoFailed(f"{exc}; see {workdir / 'serve.log'}") from None
    return process


def _all_delivered(state: sa.Engine) -> bool:
    with state.connect() as connection:
        waiting = connection.execute(
            sa.select(sa.func.count())
            .select_from(orders)
            .where(orders.c.state == OrderState.PLACED.value, orders.c.delivered_at.is_(None))
        ).scalar_one()
    return int(waiting) == 0


def _all_written_back(state: sa.Engine) -> bool:
    with state.connect() as connection:
        delivered = connection.execute(
            sa.select(sa.func.count()).select_from(orders).where(orders.c.delivered_at.is_not(None))
        ).scalar_one()
        done = connection.execute(
            sa.select(sa.func.count())
            .select_from(writeback_outbox)
            .where(writeback_outbox.c.state == "done")
        ).scalar_one()
    return int(done) >= int(delivered)


def _report_writebacks(pm_url: str) -> None:
    links = photo_links(pm_url)
    print(f"\n== {len(links)} photo links written back to the PM database (unit.{COLUMN}) ==")
    for code in sorted(links)[:5]:
        print(f"{code:<10} {links[code]}")
    if len(links) > 5:
        print(f"... and {len(links) - 5} more")


def _report_deliveries(state: sa.Engine) -> None:
    with state.connect() as connection:
        delivered = connection.execute(
            sa.select(orders.c.id, orders.c.external_property_id, orders.c.delivered_at)
            .where(orders.c.delivered_at.is_not(None))
            .order_by(orders.c.id)
        ).all()
        shown = {order_id: deliverables_for(connection, order_id) for order_id, _, _ in delivered}
    print(f"\n== {len(delivered)} orders delivered (webhooks -> propready serve -> apply_news) ==")
    for order_id, property_id, _at in delivered:
        items = shown[order_id]
        photos = sum(1 for item in items if item.kind == "photo")
        links = ", ".join(f"{item.name}={item.url}" for item in items if item.kind == "link")
        print(f"{property_id:<10} {photos:>3} photos  {links}")


def _report(state: sa.Engine) -> None:
    with state.connect() as connection:
        placed = connection.execute(sa.select(orders).order_by(orders.c.id)).mappings().all()
        why = {
            row["event_id"]: row
            for row in connection.execute(
                sa.select(audit_log).where(audit_log.c.kind == AuditKind.RULE_MATCHED)
            ).mappings()
        }
        kinds = connection.execute(
            sa.select(audit_log.c.kind, sa.func.count()).group_by(audit_log.c.kind)
        ).all()
    print(f"\n== {len(placed)} orders ==")
    for order in placed:
        matched = why.get(order["event_id"])
        services = ", ".join(f"{s['slug']} x{s['quantity']}" for s in order["payload"]["services"])
        reason = matched["detail"]["reason"] if matched is not None else ""
        trigger = matched["trigger_name"] if matched is not None else "?"
        vendor_id = order["vendor_order_id"] or "-"
        print(f"{order['external_property_id']:<10} {order['state']:<8} #{vendor_id:<7} {services}")
        print(f"{'':<10} why: trigger {trigger!r}; {reason}")
    print("\n== audit log, events by kind ==")
    for kind, count in sorted(kinds):
        print(f"{kind:<24} {count}")


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@contextmanager
def _state_engine(workdir: Path) -> Iterator[sa.Engine]:
    engine = create_state_engine(f"sqlite:///{workdir / 'state.db'}")
    try:
        yield engine
    finally:
        engine.dispose()


def _run_daemon_rounds(
    workdir: Path, env: dict[str, str], metrics_url: str, rounds: int, state: sa.Engine
) -> None:
    """Start `propready run`, feed it PM changes round by round, wait for its orders, stop it."""
    pm_path, log_path = workdir / "pm.db", workdir / "daemon.log"
    zone = ZoneInfo(DEMO_TIMEZONE)
    started_at = datetime.now(UTC)
    daemon = _spawn(["--config", env["PROPREADY_CONFIG"], "run"], log_path, env)
    print(f"daemon: propready run (pid {daemon.pid}), log in {log_path}")
    try:
        print("\n-- round 0: the daemon's first poll sees every home (already ready: no order) --")
        _await_poll(state, daemon, started_at, STARTUP_TIMEOUT)
        for step in range(1, rounds + 1):
            changes = advance_demo_pm_database(pm_path, step=step, now=datetime.now(zone))
            committed = datetime.now(UTC)
            print(f"\n-- round {step}: the PM database changed {len(changes)} fields --")
            for change in changes:
                old, new = change.old, change.new
                print(f"   {change.external_property_id}: {change.field} {old!r} -> {new!r}")
            _await_poll(state, daemon, committed, POLL_TIMEOUT)
        _wait_for(
            "every planned order to be sent and answered",
            lambda: _orders_settled(state),
            timeout=SETTLE_TIMEOUT,
            process=daemon,
        )
        print("\n-- the sandbox walks each order to delivered and sends its webhooks --")
        _wait_for(
            "every placed order to be delivered",
            lambda: _all_delivered(state),
            timeout=DELIVERY_TIMEOUT,
            process=daemon,
        )
        _wait_for(
            "every delivered order to be written back to the PM database",
            lambda: _all_written_back(state),
            timeout=DELIVERY_TIMEOUT,
            process=daemon,
        )
        _show_metrics(metrics_url)
        print("\nstopping the daemon (SIGTERM) ...")
        code = _stop(daemon, grace=STOP_TIMEOUT)
        if code is None:
            raise DemoFailed(f"the daemon did not exit within {STOP_TIMEOUT:g} s of SIGTERM")
        if code != 0:
            raise DemoFailed(f"the daemon exited with code {code} after SIGTERM, not 0")
        print("daemon stopped: exit 0")
    except BaseException:
        _stop(daemon, grace=10)
        raise


def run_demo(workdir: Path, *, homes: int, rounds: int) -> None:
    """Set up the demo in `workdir`, run the daemon through `rounds` rounds, print the report."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    pm_path = workdir / "pm.db"
    create_demo_pm_database(pm_path, homes=homes, now=datetime.now(ZoneInfo(DEMO_TIMEZONE)))
    metrics_port = _free_loopback_port()
    webhook_port = _free_loopback_port()
    config = workdir / "propready.toml"
    config.write_text(
        CONFIG_TEMPLATE.format(
            query=DEMO_SOURCE_QUERY.strip(),
            rules=_example_rules(),
            timezone=DEMO_TIMEZONE,
            poll_seconds=POLL_SECONDS,
            metrics_port=metrics_port,
            webhook_port=webhook_port,
            webhook_token=DEMO_WEBHOOK_TOKEN,
        )
    )
    pm_url = f"sqlite:///{pm_path.resolve()}"
    with config.open("a") as file:  # the write-back fills unit.sphotosurl in the demo PM database
        file.write("\n[writeback]\n")
        for key, value in prepare_demo_writeback(pm_url).items():
            file.write(f"{key} = {json.dumps(value)}\n")
    env = _demo_environment(config)
    print(f"demo PM database: {pm_path} ({homes} homes) {describe_demo_pm_database(pm_path)}")

    receiver = f"http://127.0.0.1:{webhook_port}"
    sandbox, url = _start_sandbox(
        workdir, env, f"{receiver}/webhooks/planomatic/{DEMO_WEBHOOK_TOKEN}"
    )
    env["PROPREADY_PLANOMATIC__BASE_URL"] = url
    print(f"sandbox (PlanOmatic V3 look-alike): {url}")
    serve: subprocess.Popen[bytes] | None = None
    try:
        _propready("db", "upgrade", env=env)
        serve = _start_serve(workdir, env, receiver)
        print(f"webhook receiver: propready serve on {receiver} (pid {serve.pid})")
        with _state_engine(workdir) as state:
            _run_daemon_rounds(workdir, env, f"http://127.0.0.1:{metrics_port}", rounds, state)
            _report(state)
            _report_deliveries(state)
        _report_writebacks(pm_url)
        print(f"\nExplore: PROPREADY_CONFIG={config} .venv/bin/propready audit --format table")
        print(
            f"         PROPREADY_CONFIG={config} .venv/bin/propready orders list --state delivered"
        )
    finally:
        if serve is not None:
            _stop(serve, grace=10)
        _stop(sandbox, grace=10)


def main(argv: list[str] | None = None) -> None:
    """The command line: `python -m propready.demo.run [--workdir DIR] [--homes N] [--rounds N]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--workdir", type=Path, default=Path(".demo"), help="where the demo writes its files"
    )
    parser.add_argument("--homes", type=int, default=300)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of PM changes after the first poll"
    )
    args = parser.parse_args(argv)
    workdir: Path = args.workdir.resolve()
    started = time.monotonic()
    try:
        run_demo(workdir, homes=args.homes, rounds=args.rounds)
    except DemoFailed as exc:
        log_path = workdir / "daemon.log"
        if log_path.exists():
            print(f"\n-- last lines of {log_path} --", file=sys.stderr)
            print(_tail(log_path, LOG_TAIL_LINES), file=sys.stderr)
        raise SystemExit(f"\ndemo failed: {exc}") from None
    except KeyboardInterrupt:  # the daemon and the sandbox are already stopped
        raise SystemExit("\ndemo interrupted") from None
    print(f"demo finished in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
