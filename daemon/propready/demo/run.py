"""`python -m propready.demo.run`: the README's demo, end to end on real processes.

It builds a small PM database (a Yardi-style `unit` table), writes a demo config, starts
`propready sandbox` on a free loopback port, migrates the state database, then runs
`propready run --once` for a few cycles while the simulated PM database moves homes to
"Vacant Unrented Ready" and enters construction-final dates. At the end it prints what was
ordered and why, read back from the audit log.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.schema import audit_log, orders
from propready.demo.pm_database import (
    DEMO_SOURCE_QUERY,
    advance_demo_pm_database,
    create_demo_pm_database,
    describe_demo_pm_database,
)

CONFIG_TEMPLATE = """\
# Written by the propready demo. Paths are relative to this file.
[state]
url = "sqlite:///state.db"

[source]
url = "sqlite:///pm.db"
timezone = "America/Denver"
poll_interval_seconds = 5
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

[log]
format = "console"
level = "warning"
"""


def _example_rules() -> Path:
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent.parent / "rules", package / "example_rules"):
        if candidate.is_dir():
            return candidate
    raise SystemExit("cannot find the example rules folder")


def _propready(*args: str, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "propready", "--config", env["PROPREADY_CONFIG"], *args]
    # Our own interpreter and fixed arguments: nothing untrusted reaches the command line.
    completed = subprocess.run(command, env=env, check=False)  # noqa: S603
    if completed.returncode != 0:
        raise SystemExit(
            f"demo step failed: propready {' '.join(args)} (exit {completed.returncode})"
        )


def _start_sandbox(workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    url_file = workdir / "sandbox.url"
    url_file.unlink(missing_ok=True)
    log = (workdir / "sandbox.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "propready", "sandbox", "--port", "0", "--url-file", str(url_file)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if url_file.exists() and url_file.read_text().strip():
            return process, url_file.read_text().strip()
        if process.poll() is not None:
            raise SystemExit(f"the sandbox did not start; see {workdir / 'sandbox.log'}")
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the sandbox did not start within 20 s")


def _report(workdir: Path) -> None:
    engine = create_state_engine(f"sqlite:///{workdir / 'state.db'}")
    try:
        with engine.connect() as connection:
            placed = connection.execute(sa.select(orders).order_by(orders.c.id)).mappings().all()
            why = {
                row["event_id"]: row
                for row in connection.execute(
                    sa.select(audit_log).where(audit_log.c.kind == "rule_matched")
                ).mappings()
            }
            kinds = connection.execute(
                sa.select(audit_log.c.kind, sa.func.count()).group_by(audit_log.c.kind)
            ).all()
    finally:
        engine.dispose()
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--workdir", type=Path, default=Path(".demo"), help="where the demo writes its files"
    )
    parser.add_argument("--homes", type=int, default=300)
    parser.add_argument("--cycles", type=int, default=3, help="cycles after the first one")
    args = parser.parse_args(argv)

    workdir: Path = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    now = datetime.now(UTC)
    pm_path = workdir / "pm.db"
    create_demo_pm_database(pm_path, homes=args.homes, now=now)
    config = workdir / "propready.toml"
    config.write_text(
        CONFIG_TEMPLATE.format(query=DEMO_SOURCE_QUERY.strip(), rules=_example_rules())
    )
    env = {**os.environ, "PROPREADY_CONFIG": str(config)}
    print(f"demo PM database: {pm_path} ({args.homes} homes) {describe_demo_pm_database(pm_path)}")

    sandbox, url = _start_sandbox(workdir, env)
    env["PROPREADY_PLANOMATIC__BASE_URL"] = url
    print(f"sandbox (PlanOmatic V3 look-alike): {url}")
    try:
        _propready("db", "upgrade", env=env)
        print("\n-- cycle 0: first sight of every home (already-ready homes do not order) --")
        _propready("run", "--once", env=env)
        for step in range(1, args.cycles + 1):
            changes = advance_demo_pm_database(pm_path, step=step, now=now + timedelta(hours=step))
            print(f"\n-- cycle {step}: the PM database changed {len(changes)} fields --")
            for change in changes:
                old, new = change.old, change.new
                print(f"   {change.external_property_id}: {change.field} {old!r} -> {new!r}")
            _propready("run", "--once", env=env)
        _report(workdir)
        print(f"\nExplore: PROPREADY_CONFIG={config} .venv/bin/propready audit --format table")
    finally:
        sandbox.send_signal(signal.SIGTERM)
        sandbox.wait(timeout=10)


if __name__ == "__main__":
    main()
