"""Walk every propready command through the mistakes operators make; record what each prints.

    .venv/bin/python -m tests.tools.error_lines        # the table, as Markdown

tests/integration/test_error_lines.py runs the same walk and fails on a traceback, an answer of
more than one line, a zero exit, or an answer that does not name the setting at fault. Commands
are enumerated from the click tree, so a new command cannot escape the walk: it fails until it is
listed in COMMANDS with the settings it uses.

Commands run in this process (fast) except those that serve until stopped when nothing is wrong
(`run`, `sandbox`): they run as subprocesses with a timeout.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click
import structlog

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.store import migrate
from propready.adapters.store.engine import create_state_engine
from propready.cli.main import cli, run
from tests.integration.cycle_support import QUERY, REPO, PmDatabase, home

# What a mistake breaks, and so which commands must answer it.
CONFIG, STATE, SOURCE_URL, SOURCE_DOWN, QUERY_ERROR = "config", "state", "source_url", "source_down", "query"  # fmt: skip
RULES, CATALOG, VENDOR, METRICS, PORT = "rules", "catalog", "vendor", "metrics", "port"
DEPLOY, WEBHOOKS, CONSOLE = "deploy", "webhooks", "console"
WRITEBACK = "writeback"  # the write-back target (a config mistake there is CONFIG)
WRITEBACK_STATEMENT = (
    "UPDATE units SET photos_url = :photo_manage_link WHERE unit_id = :external_property_id"
)


@dataclass(frozen=True)
class Command:
    """How to run a command in the walk, and which kinds of mistake it must answer."""

    args: tuple[str, ...]
    uses: frozenset[str]
    forever: bool = False  # serves until stopped when nothing is wrong
    reads_config: bool = True


_STATE_ONLY = frozenset({CONFIG, STATE})
_RULES = frozenset({CONFIG, STATE, SOURCE_URL, RULES, CATALOG})

COMMANDS: dict[str, Command] = {
    "run": Command((), _RULES | {METRICS}, forever=True),
    "run --once": Command(("run", "--once"), _RULES | {SOURCE_DOWN, QUERY_ERROR}),
    "check": Command((), _RULES | {SOURCE_DOWN, QUERY_ERROR, VENDOR, WRITEBACK}),
    "db upgrade": Command((), _STATE_ONLY),
    "db current": Command((), _STATE_ONLY),
    "rules check": Command((), frozenset({CONFIG, RULES, CATALOG})),
    "rules test": Command((), frozenset({CONFIG, RULES, CATALOG})),
    "orders list": Command((), _STATE_ONLY),
    "orders show": Command(("orders", "show", "pr-none"), _STATE_ONLY),
    "orders approve": Command(("orders", "approve", "pr-none"), _STATE_ONLY),
    "orders hold": Command(("orders", "hold", "pr-none", "--reason", "wait"), _STATE_ONLY),
    "orders cancel": Command(("orders", "cancel", "pr-none", "--notes", "sold"), _STATE_ONLY),
    "orders resolve": Command(("orders", "resolve", "pr-none", "--not-placed"), _STATE_ONLY),
    "orders sync": Command((), _RULES),
    "audit": Command((), _STATE_ONLY),
    "audit verify": Command((), _STATE_ONLY),
    "explain": Command(("explain", "H1"), _STATE_ONLY),
    "report": Command(("report", "--since", "2026-01-01", "--out", "{tmp}/report.html"), _STATE_ONLY),
    "simulate": Command((), _RULES | {SOURCE_DOWN, QUERY_ERROR}),
    "backfill": Command(("backfill", "--dry-run"), _RULES),
    "sandbox": Command(("sandbox", "--port", "{busy_port}"), frozenset({PORT}), forever=True, reads_config=False),
    "deploy-files": Command(("deploy-files", "{tmp}/deployed"), frozenset({DEPLOY}), reads_config=False),
    "sending status": Command((), _STATE_ONLY),
    "sending pause": Command(("sending", "pause", "--reason", "maintenance"), _STATE_ONLY),
    "sending resume": Command(("sending", "resume", "--reason", "done"), _STATE_ONLY),
    "serve": Command((), _STATE_ONLY | {WEBHOOKS, CONSOLE}, forever=True),
    "webhooks list": Command((), _STATE_ONLY),
    "webhooks show": Command(("webhooks", "show", "1"), _STATE_ONLY),
    "webhooks replay": Command(("webhooks", "replay", "--id", "1"), _STATE_ONLY),
    "attention": Command((), _STATE_ONLY),
    "attention ack": Command(("attention", "ack", "unknown:pr-none", "--reason", "seen"), _STATE_ONLY),
    "attention snooze": Command(("attention", "snooze", "unknown:pr-none", "--for", "4h", "--reason", "later"), _STATE_ONLY),
    "notify test": Command((), frozenset({CONFIG})),
    "reorder": Command(("reorder", "H1", "--reason", "reshoot"), _RULES | {SOURCE_DOWN, QUERY_ERROR}),
    "writeback list": Command((), _STATE_ONLY),
    "writeback retry": Command(("writeback", "retry", "pr-none", "--reason", "fixed"), _STATE_ONLY),
    "users add": Command(("users", "add", "walker", "--role", "viewer", "--no-password"), _STATE_ONLY),
    "users passwd": Command(("users", "passwd", "walker", "--password-file", "{tmp}/password.txt"), _STATE_ONLY),
    "users list": Command((), _STATE_ONLY),
    "users remove": Command(("users", "remove", "walker"), _STATE_ONLY),
    "users disable": Command(("users", "disable", "walker"), _STATE_ONLY),
    "users enable": Command(("users", "enable", "walker"), _STATE_ONLY),
}  # fmt: skip


@dataclass(frozen=True)
class Mistake:
    key: str
    what: str  # for the table
    breaks: str  # one of the kinds above
    names: str  # the answer must contain this (the setting, or the file)
    config: dict[str, dict[str, Any]] = field(default_factory=dict)  # overrides per section
    raw_config: str | None = None  # the config file's whole text instead
    config_path: str | None = None  # --config pointing elsewhere


def mistakes(env: Environment) -> list[Mistake]:
    closed = f"127.0.0.1:{env.closed_port}"
    return [
        Mistake("config_missing", "config file missing", CONFIG, "missing.toml",
                config_path=str(env.tmp / "missing.toml")),
        Mistake("config_not_toml", "config file is not TOML", CONFIG, "propready.toml",
                raw_config="[state\nurl = 1\n"),
        Mistake("state_refused", f"state.url: PostgreSQL on {closed}, nobody listening", STATE,
                "state.url", {"state": {"url": f"postgresql+psycopg://root@{closed}/pr"}}),
        Mistake("state_unknown_host", "state.url: a host name that does not resolve", STATE,
                "state.url", {"state": {"url": "postgresql+psycopg://root@nosuchhost.invalid/pr"}}),
        Mistake("state_postgres_scheme", "state.url: `postgres://...`", STATE, "state.url",
                {"state": {"url": "postgres://root@127.0.0.1/pr"}}),
        Mistake("state_typo", "state.url: `postgresq://...` (typo)", STATE, "state.url",
                {"state": {"url": "postgresq://root@127.0.0.1/pr"}}),
        Mistake("state_driver", "state.url: a driver that is not installed (psycopg2)", STATE,
                "state.url", {"state": {"url": "postgresql+psycopg2://root@127.0.0.1/pr"}}),
        Mistake("state_not_url", "state.url: a path, not a URL", STATE, "state.url",
                {"state": {"url": "/var/lib/propready/state.db"}}),
        Mistake("state_is_source", "state.url equal to source.url", CONFIG, "state.url",
                {"state": {"url": env.pm_url}}),
        Mistake("source_refused", f"source.url: PostgreSQL on {closed}, nobody listening",
                SOURCE_DOWN, "source", {"source": {"url": f"postgresql+psycopg://root@{closed}/pm"}}),
        Mistake("source_postgres_scheme", "source.url: `postgres://...`", SOURCE_URL, "source.url",
                {"source": {"url": "postgres://root@127.0.0.1/pm"}}),
        Mistake("source_typo", "source.url: `postgresq://...` (typo)", SOURCE_URL, "source.url",
                {"source": {"url": "postgresq://root@127.0.0.1/pm"}}),
        Mistake("source_missing_file", "source.url: a SQLite file that does not exist",
                SOURCE_URL, "source.url", {"source": {"url": f"sqlite:///{env.tmp / 'nope.db'}"}}),
        Mistake("query_error", "source.query: a table that does not exist", QUERY_ERROR,
                "source", {"source": {"query": "SELECT * FROM nowhere"}}),
        Mistake("vendor_refused", f"planomatic.base_url: nobody listening on {closed}", VENDOR,
                "planomatic.base_url", {"planomatic": {"base_url": f"http://{closed}"}}),
        Mistake("vendor_html", "planomatic.base_url: a web page (HTML 404)", VENDOR,
                "planomatic.base_url", {"planomatic": {"base_url": env.web_page}}),
        Mistake("vendor_key", "planomatic.api_key: refused by the vendor", VENDOR, "api_key",
                {"planomatic": {"api_key": "wrong-key"}}),
        Mistake("vendor_http", "planomatic.base_url: http:// to a non-loopback host", CONFIG,
                "planomatic.base_url",
                {"planomatic": {"base_url": "http://api-sandbox.planomatic.com"}}),
        Mistake("metrics_busy", "metrics.listen: a port in use", METRICS, "metrics.listen",
                {"metrics": {"listen": f"127.0.0.1:{env.busy_port}"}}),
        Mistake("sandbox_port_busy", "sandbox --port: a port in use", PORT, "sandbox --port"),
        Mistake("webhooks_busy", "webhooks.listen: a port in use", WEBHOOKS, "webhooks.listen",
                {"webhooks": {"listen": f"127.0.0.1:{env.busy_port}"}}),
        Mistake("console_busy", "console.listen: a port in use", CONSOLE, "console.listen",
                {"console": {"listen": f"127.0.0.1:{env.busy_port}"}}),
        Mistake("rules_missing", "rules.path: does not exist", RULES, "rules.path",
                {"rules": {"path": str(env.tmp / "no-rules")}}),
        Mistake("rules_file", "rules.path: a file that is not YAML (the config)", RULES,
                "rules.path", {"rules": {"path": str(env.tmp / "base.toml")}}),
        Mistake("rules_empty", "rules.path: an empty folder", RULES, "rules.path",
                {"rules": {"path": str(env.empty_dir)}}),
        Mistake("catalog_missing", "rules.catalog_path: does not exist", CATALOG,
                "rules.catalog_path", {"rules": {"catalog_path": str(env.tmp / "catalog.yaml")}}),
        Mistake("writeback_postgres_scheme", "writeback.url: `postgres://...`", CONFIG,
                "writeback.url", {"writeback": {"url": "postgres://root:s3cret@127.0.0.1/pm",
                                                "statement": WRITEBACK_STATEMENT}}),
        Mistake("writeback_two_statements", "writeback.statement: two statements", CONFIG,
                "writeback.statement",
                {"writeback": {"url": f"sqlite:///{env.tmp / 'pm-target.db'}",
                               "statement": WRITEBACK_STATEMENT + "; DELETE FROM units"}}),
        Mistake("writeback_refused", f"writeback.url: PostgreSQL on {closed}, nobody listening",
                WRITEBACK, "writeback",
                {"writeback": {"url": f"postgresql+psycopg://root:s3cret@{closed}/pm",
                               "statement": WRITEBACK_STATEMENT}}),
        Mistake("deploy_overwrite", "deploy-files into a folder that has the files", DEPLOY,
                "--force"),
    ]  # fmt: skip


@dataclass(frozen=True)
class Answer:
    command: str
    mistake: Mistake
    exit_code: int
    stdout: str
    stderr: str

    @property
    def log_lines(self) -> list[dict[str, Any]]:
        return [entry for entry in map(_log_entry, self.stderr.splitlines()) if entry]

    @property
    def lines(self) -> list[str]:
        """What the command answered: stderr without log lines; for `check`, its FAIL lines."""
        said = [x for x in self.stderr.splitlines() if x.strip() and _log_entry(x) is None]
        if not said and self.command == "check":
            return [x for x in self.stdout.splitlines() if x.startswith("FAIL ")]
        return said

    def problems(self) -> list[str]:
        """Why this answer is not good enough; empty when it is."""
        found = []
        if "Traceback" in self.stdout + self.stderr:
            found.append("prints a traceback")
        if any(entry.get("event") == "unexpected_error" for entry in self.log_lines):
            found.append("took the unexpected-error path")
        if self.exit_code == 0:
            found.append("exits 0")
        if self.command != "check" and len(self.lines) != 1:
            found.append(f"answers in {len(self.lines)} lines, not one")
        if self.command == "check" and not self.lines:
            found.append("has no FAIL line")
        if not any(self.mistake.names in line for line in self.lines):
            found.append(f"does not name {self.mistake.names!r}")
        return found


def _log_entry(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "event" in entry and "level" in entry else None


@dataclass
class Environment:
    tmp: Path
    pm_url: str
    state_url: str
    sandbox_url: str
    web_page: str
    closed_port: int
    busy_port: int
    empty_dir: Path

    def base(self) -> dict[str, dict[str, Any]]:
        return {
            "state": {"url": self.state_url},
            "source": {"url": self.pm_url, "query": QUERY},
            "rules": {"path": str(REPO / "rules")},
            "planomatic": {"base_url": self.sandbox_url, "api_key": "sandbox-key"},
            "metrics": {"listen": "127.0.0.1:0"},
            "webhooks": {"listen": "127.0.0.1:0", "token": "walk-token-0123456789abcdefghij"},
            "log": {"format": "json"},
        }


class _HtmlNotFound(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = b"<html><body>Not Found</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def environment(tmp: Path) -> Iterator[Environment]:
    """A working set-up (PM and state databases, the sandbox, a web page) to break one way at a
    time, plus a port nobody listens on (bound, never listening) and a port in use."""
    pm = PmDatabase(f"sqlite:///{tmp / 'pm.db'}")
    pm.insert(home("H1", status="Vacant Unrented Ready"), home("H2"))
    pm.close()
    state_url = f"sqlite:///{tmp / 'state.db'}"
    engine = create_state_engine(state_url)
    migrate.upgrade(engine)
    engine.dispose()
    empty = tmp / "empty-rules"
    empty.mkdir()
    (tmp / "deployed").mkdir()
    (tmp / "deployed" / "propready.service").write_text("# the operator's own copy\n")
    (tmp / "password.txt").write_text("a-long-enough-walk-password\n")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    web = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlNotFound)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        with SandboxServer(SandboxConfig.default()) as sandbox:
            env = Environment(
                tmp=tmp,
                pm_url=f"sqlite:///{tmp / 'pm.db'}",
                state_url=state_url,
                sandbox_url=sandbox.url,
                web_page=f"http://127.0.0.1:{web.server_address[1]}",
                closed_port=closed.getsockname()[1],
                busy_port=busy.getsockname()[1],
                empty_dir=empty,
            )
            _write_config(tmp / "base.toml", env.base())
            yield env
    finally:
        web.shutdown()
        web.server_close()
        closed.close()
        busy.close()


def _write_config(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    text = ""
    for name, values in sections.items():
        text += f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    path.write_text(text)


def all_commands() -> list[str]:
    """Every runnable command in the click tree (`run --once` is walked as its own case)."""

    def walk(group: click.Group, prefix: tuple[str, ...]) -> Iterator[str]:
        for name, command in group.commands.items():
            path = (*prefix, name)
            if isinstance(command, click.Group):
                if command.invoke_without_command:
                    yield " ".join(path)
                yield from walk(command, path)
            else:
                yield " ".join(path)

    return [*walk(cli, ()), "run --once"]


def answer(env: Environment, name: str, mistake: Mistake) -> Answer:
    command = COMMANDS[name]
    sections = env.base()
    # Each answer gets its own copy of the migrated state database: a failed poll recorded by
    # one command must not show up in the next one's `check`.
    state = env.tmp / f"state-{name.replace(' ', '-')}-{mistake.key}.db"
    shutil.copy(env.tmp / "state.db", state)
    sections["state"]["url"] = f"sqlite:///{state}"
    for section, values in mistake.config.items():
        sections.setdefault(section, {}).update(values)
    config = env.tmp / f"{mistake.key}.toml"
    if mistake.raw_config is not None:
        config = env.tmp / "propready.toml"
        config.write_text(mistake.raw_config)
    else:
        _write_config(config, sections)
    args = [a.format(tmp=env.tmp, busy_port=env.busy_port) for a in (command.args or name.split())]
    prefix = ["--config", mistake.config_path or str(config)] if command.reads_config else []
    if command.forever:
        return _in_subprocess(name, mistake, [*prefix, *args])
    return _in_process(name, mistake, [*prefix, *args])


def _in_process(name: str, mistake: Mistake, argv: list[str]) -> Answer:
    out, err = io.StringIO(), io.StringIO()
    environ = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PROPREADY_")}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(argv)
    finally:
        structlog.reset_defaults()
        os.environ.update(environ)
    return Answer(name, mistake, code, out.getvalue(), err.getvalue())


def _in_subprocess(name: str, mistake: Mistake, argv: list[str]) -> Answer:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROPREADY_")}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "propready", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=environ,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return Answer(
            name, mistake, 0, out, "(still running after 60 s: the mistake went unnoticed)"
        )
    return Answer(name, mistake, done.returncode, done.stdout, done.stderr)


def walk(env: Environment, names: list[str] | None = None) -> Iterator[Answer]:
    """Every (command, mistake) pair where the command uses what the mistake breaks."""
    for mistake in mistakes(env):
        for name in names or list(COMMANDS):
            command = COMMANDS[name]
            if mistake.breaks == CONFIG and not command.reads_config:
                continue
            if mistake.breaks in command.uses:
                yield answer(env, name, mistake)


def table(answers: list[Answer]) -> str:
    """Markdown: each mistake, the line(s) printed, and which commands printed each."""
    rows = ["| mistake | line printed | commands |", "|---|---|---|"]
    by_mistake: dict[str, dict[str, list[str]]] = {}
    for item in answers:
        lines = " / ".join(item.lines) or "(nothing)"
        lines = re.sub(r"/tmp/[^ :)'\"]*?/(?=[\w.-]+(?:[ :)'\"]|$))", "…/", lines)
        lines = re.sub(r"127\.0\.0\.1:\d{4,5}", "127.0.0.1:PORT", lines)
        key = item.mistake.what
        by_mistake.setdefault(key, {}).setdefault(lines, []).append(
            f"{item.command} ({item.exit_code})"
        )
    for what, lines in by_mistake.items():
        for text, commands in lines.items():
            escaped = text.replace("|", "\\|")
            rows.append(f"| {what} | `{escaped}` | {', '.join(commands)} |")
    return "\n".join(rows)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, environment(Path(tmp)) as env:
        answers = list(walk(env))
    print(table(answers))
    bad = [(a.command, a.mistake.key, a.problems()) for a in answers if a.problems()]
    for command, key, problems in bad:
        print(f"FAILED {command} / {key}: {'; '.join(problems)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
