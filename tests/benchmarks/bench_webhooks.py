"""Benchmark: webhook deliveries acknowledged per second by `propready serve`, and how fast.

Goals (issue 13): >= 500 acknowledged deliveries per second on PostgreSQL with 50 concurrent
senders, p99 acknowledgement latency < 50 ms. Each delivery is a distinct body of about 1.6 kB
(an `order.delivered` with 10 photos), so every request is an insert and a commit.

`propready serve` runs as its own process, exactly as under systemd (one uvicorn worker);
the senders are asyncio tasks on keep-alive connections in this process. The machine's load
average is printed before and after each run: the cores are shared, so read the figures with it.

    .venv/bin/python tests/benchmarks/bench_webhooks.py                    # both databases
    .venv/bin/python tests/benchmarks/bench_webhooks.py --state postgresql --seconds 20
    .venv/bin/python tests/benchmarks/bench_webhooks.py --pg-url postgresql://root@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg

from propready.adapters.store import migrate
from propready.adapters.store.engine import create_state_engine

TOKEN = "bench-token-0123456789abcdefghijkl"
PG_ADMIN = os.environ.get("PROPREADY_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def body(n: int) -> bytes:
    order_id = 100000 + n
    return json.dumps(
        {
            "order_id": order_id,
            "external_order_id": f"pr-bench-{n}",
            "external_property_id": f"BENCH-{n:06d}",
            "event": "order.delivered",
            "event_datetime": "2026-12-01T10:00:00.000+00:00",
            "order_status": "completed",
            "property_access": {"method_of_access": "lockbox_code", "access_code": "4711"},
            "links": {
                "photo_manage_link": f"https://go.planomatic.example/planox/manage_photos/{order_id}",
                "zillow_3d_link": f"https://www.zillow.example/view-3d-home/{order_id}",
            },
            "photos": [
                {
                    "sequence": seq,
                    "caption": "Kitchen",
                    "full_size_url": f"https://cdn.example/{order_id}-{seq}.jpg",
                    "uploaded_at": "2026-12-01T08:00:00.000+00:00",
                }
                for seq in range(1, 11)
            ],
        }
    ).encode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), so figures can be read per delivery
    whatever else the shared machine is doing."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pg_database() -> tuple[str, str]:
    name = f"propready_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    return name, PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def start_serve(folder: Path, state_url: str, port: int) -> subprocess.Popen[bytes]:
    config = folder / "propready.toml"
    config.write_text(
        f'[state]\nurl = "{state_url}"\n'
        '[source]\nurl = "sqlite:///pm.db"\nquery = "SELECT 1 AS external_property_id"\n'
        f'[webhooks]\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n'
        '[log]\nformat = "json"\nlevel = "info"\n'
    )
    log = (folder / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "propready", "--config", str(config), "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"serve did not start:\n{(folder / 'serve.log').read_text()[-2000:]}")


async def load(
    url: str, seconds: float, concurrency: int, first: int, rate: float | None = None
) -> tuple[list[float], int]:
    """`concurrency` senders, each on its own keep-alive connection, for `seconds`; the
    latencies of the 2xx answers and the count of the others.

    Without `rate` each sender posts its next delivery as soon as the last is answered (the
    most the receiver can take). With `rate` (deliveries per second for all senders together)
    each sender keeps a schedule, and a latency counts from the scheduled moment, so time spent
    waiting behind a slow answer is included rather than hidden.

    A minimal HTTP/1.1 client on asyncio streams: a full client library spends several
    milliseconds of CPU per request here, more than the server, and would measure itself.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    failures = 0
    counter = iter(range(first, first + 10_000_000))
    begin = time.perf_counter()
    deadline = begin + seconds
    interval = concurrency / rate if rate else 0.0

    async def sender(index: int) -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(host, port)
        due = begin + interval * index / concurrency
        try:
            while time.perf_counter() < deadline:
                payload = body(next(counter))
                request = (
                    f"POST {parts.path} HTTP/1.1\r\nHost: {host}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
                ).encode() + payload
                if rate:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    started = due
                    due += interval
                else:
                    started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                elapsed = time.perf_counter() - started
                if head.startswith(b"HTTP/1.1 2"):
                    latencies.append(elapsed)
                else:
                    failures += 1
        finally:
            writer.close()

    await asyncio.gather(*(sender(index) for index in range(concurrency)))
    return latencies, failures


def report(label: str, latencies: list[float], failures: int, elapsed: float, extra: str) -> None:
    latencies.sort()
    count = len(latencies)
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[max(0, int(count * 0.99) - 1)] * 1000
    print(
        f"  {label:<24} {count / elapsed:6.0f} acknowledged/s  p50 {p50:6.1f} ms  "
        f"p99 {p99:6.1f} ms  max {latencies[-1] * 1000:7.1f} ms  ({count} in {elapsed:.1f} s, "
        f"{failures} not 2xx{extra})"
    )


def run(state: str, seconds: float, concurrency: int, warmup: float, rate: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        folder = Path(tmp)
        pg_name = None
        if state == "postgresql":
            pg_name, state_url = pg_database()
        else:
            state_url = f"sqlite:///{folder / 'state.db'}"
        engine = create_state_engine(state_url)
        migrate.upgrade(engine)
        engine.dispose()
        port = free_port()
        process = start_serve(folder, state_url, port)
        url = f"http://127.0.0.1:{port}/webhooks/planomatic/{TOKEN}"
        try:
            asyncio.run(load(url, warmup, concurrency, first=0))
            print(f"{state} ({concurrency} senders; load average {os.getloadavg()[0]:.2f})")
            server_cpu = cpu_seconds(process.pid)
            client_cpu = time.process_time()
            started = time.perf_counter()
            latencies, failures = asyncio.run(load(url, seconds, concurrency, first=1_000_000))
            elapsed = time.perf_counter() - started
            server_cpu = cpu_seconds(process.pid) - server_cpu
            client_cpu = time.process_time() - client_cpu
            count = max(1, len(latencies))
            report(
                "as fast as answered",
                latencies,
                failures,
                elapsed,
                f"; serve CPU {server_cpu / count * 1000:.2f} ms/delivery, senders "
                f"{client_cpu / count * 1000:.2f} ms",
            )
            started = time.perf_counter()
            latencies, failures = asyncio.run(
                load(url, seconds, concurrency, first=2_000_000, rate=rate)
            )
            report(f"offered {rate:g}/s", latencies, failures, time.perf_counter() - started, "")
            print(f"  load average after: {os.getloadavg()[0]:.2f}")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            if pg_name is not None:
                drop_pg_database(pg_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--rate", type=float, default=500.0, help="offered load of the paced run, per second"
    )
    args = parser.parse_args()
    states = ["postgresql", "sqlite"] if args.state == "both" else [args.state]
    for state in states:
        run(state, args.seconds, args.concurrency, args.warmup, args.rate)


if __name__ == "__main__":
    main()
