"""The runbook's nginx example, run for real in front of the receiver: the docs are true."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.daemon_support import free_port, wait_until
from tests.integration.webhook_support import TOKEN, Receiver, delivery, running_receiver

RUNBOOK = Path(__file__).resolve().parents[2] / "deploy" / "RUNBOOK.md"
pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("openssl") is None,
    reason="needs nginx and openssl",
)


def runbook_nginx_example() -> str:
    section = RUNBOOK.read_text().split("## Webhooks: `propready serve`", 1)[1]
    match = re.search(r"```nginx\n(.*?)```", section, re.S)
    assert match, "the runbook's webhook section has no nginx example"
    return match.group(1)


@pytest.fixture
def proxied(tmp_path: Path, sqlite_state_url: str) -> Iterator[tuple[str, Receiver, Path]]:
    """nginx with the runbook's server block (own certificate, ports, log files) before serve."""
    with running_receiver(sqlite_state_url) as receiver:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=hooks.example.com", "-keyout", str(tmp_path / "key.pem"),
             "-out", str(tmp_path / "cert.pem")],
            check=True, capture_output=True,
        )  # fmt: skip
        port = free_port()
        upstream = receiver.url.removeprefix("http://")
        block = (
            runbook_nginx_example()
            .replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
            .replace(
                "/etc/letsencrypt/live/hooks.example.com/fullchain.pem", str(tmp_path / "cert.pem")
            )
            .replace(
                "/etc/letsencrypt/live/hooks.example.com/privkey.pem", str(tmp_path / "key.pem")
            )
            .replace("/var/log/nginx/", f"{tmp_path}/")
            .replace("http://127.0.0.1:8710", f"http://{upstream}")
        )
        assert "8710" not in block
        assert "/var/log" not in block
        temp_paths = "\n".join(
            f"{kind}_temp_path {tmp_path}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            f"daemon off;\nuser root;\npid {tmp_path}/nginx.pid;\n"
            f"error_log {tmp_path}/main-error.log;\nevents {{}}\n"
            f"http {{\n{temp_paths}\naccess_log off;\n{block}\n}}\n"
        )
        output = (tmp_path / "nginx.out").open("wb")
        process = subprocess.Popen(
            ["nginx", "-p", str(tmp_path), "-c", str(conf)], stdout=output, stderr=output
        )
        try:
            base = f"https://127.0.0.1:{port}"

            def up() -> bool:
                if process.poll() is not None:
                    pytest.fail(f"nginx exited: {(tmp_path / 'nginx.out').read_text()}")
                try:
                    httpx.get(base, verify=False, timeout=1)
                except httpx.TransportError:
                    return False
                return True

            wait_until("nginx to listen", up)
            yield base, receiver, tmp_path / "propready-webhooks.log"
        finally:
            process.terminate()
            process.wait(timeout=10)
            output.close()


@pytest.fixture
def sqlite_state_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "state.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def test_the_runbook_proxy_forwards_only_webhooks_caps_bodies_and_logs_no_token(
    proxied: tuple[str, Receiver, Path],
) -> None:
    """Through TLS: a delivery is stored; /healthz, /metrics and GET are not reachable; a 2 MB
    body is refused by nginx; the access log shows the path without the token."""
    base, receiver, access_log = proxied
    with httpx.Client(base_url=base, verify=False, timeout=10) as client:
        stored = client.post(f"/webhooks/planomatic/{TOKEN}", content=delivery(100001, "ordered"))
        assert (stored.status_code, stored.json()["status"]) == (200, "stored")
        query = client.post(
            "/webhooks/planomatic", params={"token": TOKEN}, content=delivery(100001, "scheduled")
        )
        assert query.status_code == 200
        assert client.get("/healthz").status_code == 404
        assert client.get("/metrics").status_code == 404
        assert client.get(f"/webhooks/planomatic/{TOKEN}").status_code == 403
        big = client.post(f"/webhooks/planomatic/{TOKEN}", content=b"{" + b" " * 2_000_000 + b"}")
        assert big.status_code == 413
    assert [row.order_status for row in receiver.rows()] == ["ordered", "scheduled"]
    time.sleep(0.2)  # nginx writes its access log line after the answer
    log = access_log.read_text()
    assert '"POST /webhooks/planomatic/***" 200' in log
    assert '"POST /webhooks/planomatic" 200' in log  # the ?token= form: no query logged
    assert TOKEN not in log
