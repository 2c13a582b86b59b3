"""`propready run`: the scheduler, signals, systemd notify and watchdog, metrics and health.

Jobs (APScheduler 3.11, in-memory store, a small thread pool; each job coalesces missed runs and
never overlaps itself):

    poll         every source.poll_interval_seconds: changes since the cursor, events, decisions
    full_pass    every source.full_scan_interval_seconds (with a cursor column): everything again
    send         every daemon.send_interval_seconds, and at once after a poll planned orders
    recovery     every daemon.recovery_interval_seconds: orders abandoned in `sending`
    status_sync  every daemon.status_sync_interval_seconds: reconciliation, a retrieve of placed
                 orders without vendor news for orders.reconcile_after_hours (sync_share)
    apply_news   every daemon.apply_news_interval_seconds: stored webhook deliveries -> orders
    notify       every notify.interval_seconds: facts for people, grouped messages, the digest
    writeback    every writeback.interval_seconds: delivered orders written back to the PM
                 system (a run does nothing while writeback.url is empty)
    rules_watch  every 2 s: reload the rule files when they change on disk
    audit_anchor every daemon.audit_anchor_interval_seconds: publish the audit chain's head

Signal handlers only set flags; the main thread acts on them, because a handler that takes a
lock the interrupted main thread already holds would deadlock. SIGTERM: systemd hears
STOPPING=1, no job takes new work, an order waiting for its rate-limit slot is parked, a request
already sent is finished, and the process exits 0. SIGHUP: RELOADING=1, the config file and the
rule files are reloaded (bad ones refused, the running ones kept), then READY=1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import sqlalchemy as sa
import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler

from propready.adapters.planomatic import PlanomaticClient
from propready.adapters.store import audit, outbox, properties
from propready.adapters.store.audit_chain import chain_head
from propready.core.audit_kinds import AuditKind
from propready.log import REDACTOR, configure_logging
from propready.runtime.config_reload import merge_reloaded
from propready.runtime.health import HealthReport, HealthTracker
from propready.runtime.metrics import DaemonMetrics, MetricsServer
from propready.runtime.notify import SystemdNotifier
from propready.service import Components, CycleSummary, notify_step, poll_step, recover, send_due
from propready.service.checkpoints import CHECKPOINT
from propready.service.rules_reload import RuleReloader
from propready.service.status_sync import reconcile_statuses
from propready.service.vendor_news import Applier
from propready.service.writeback import writeback_step
from propready.settings import ConfigError, Settings, load_settings
from propready.wiring import pacer_for, vendor_client

log = structlog.get_logger("propready.daemon")

RULES_WATCH_SECONDS = 2.0
MAIN_LOOP_SECONDS = 0.2  # how quickly the main thread notices a signal's flag
HEARTBEAT_SECONDS = 5.0  # health gauge and watchdog checks when systemd asks for no watchdog
QUIET_JOBS = frozenset(
    {"send", "recovery", "status_sync", "audit_anchor", "notify", "apply_news", "writeback"}
)  # logged at debug when idle


# Jobs whose idle run only reads (apply_news: one SELECT, which SQLite's WAL answers even while
# another process holds the write lock): an idle run is no sign of a daemon that gets work done,
# so it does not feed the watchdog.
IDLE_PROVES_NOTHING = frozenset({"apply_news"})


def poll_stale_after(settings: Settings) -> timedelta:
    """Health turns bad when no poll succeeded for three intervals plus a minute of slack."""
    return timedelta(seconds=3 * settings.source.poll_interval_seconds + 60)


@dataclass
class Liveness:
    """What the watchdog feeds on: the last time any job finished (successfully or not).

    A failing source or vendor is the health endpoint's business; the watchdog is for a daemon
    that no longer gets anything done (a hung connection, a deadlock), which a restart cures.
    """

    stall_seconds: float
    clock: Callable[[], float] = time.monotonic
    last_progress: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.last_progress = self.clock()

    def progressed(self) -> None:
        self.last_progress = self.clock()

    def alive(self) -> bool:
        return self.clock() - self.last_progress < self.stall_seconds


class Daemon:
    """One `propready run` process around already wired components."""

    def __init__(
        self,
        parts: Components,
        *,
        config_path: Path,
        clock: Callable[[], datetime],
        metrics: DaemonMetrics,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.parts = parts
        self.config_path = config_path
        self.clock = clock
        self.metrics = metrics
        self.notifier = notifier or SystemdNotifier.from_environ()
        settings = parts.settings
        self.health = HealthTracker(clock(), poll_stale_after=poll_stale_after(settings))
        self.liveness = Liveness(settings.daemon.watchdog_stall_seconds)
        self.reloader = RuleReloader(parts, clock)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=8)},
            job_defaults={
                "coalesce": True,  # a daemon that was busy runs a missed job once, not N times
                "max_instances": 1,  # a slow poll is never overlapped by the next one
                # A run that starts late is still worth doing; one more than a full interval
                # late is replaced by the next (coalesce).
                "misfire_grace_time": None,
            },
            timezone="UTC",
        )
        self._running: dict[str, int] = {}
        self._running_lock = threading.Lock()
        self._stop_signal: str | None = None
        self._reload_signals = 0
        self._retired_clients: list[PlanomaticClient] = []
        self._metrics_server: MetricsServer | None = None
        self._last_status = "starting"
        self._applier = Applier(parts, clock)

    # --- lifecycle ------------------------------------------------------------------------

    def run(self) -> int:
        """Start, serve until SIGTERM or SIGINT, stop; the process's exit code."""
        self._start()
        heartbeat = self._heartbeat_seconds()
        next_beat = 0.0
        while self._stop_signal is None:
            if self._reload_signals:
                self._reload_signals = 0
                self.scheduler.add_job(
                    self._reload, id="reload", replace_existing=True, misfire_grace_time=None
                )
            if time.monotonic() >= next_beat:
                self._beat()
                next_beat = time.monotonic() + heartbeat
            time.sleep(MAIN_LOOP_SECONDS)
        return self._stop(self._stop_signal)

    def _start(self) -> None:
        settings = self.parts.settings
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)
        # "Skipped: maximum number of running instances" is how a long send drain or a slow
        # full pass looks by design (max_instances=1); job errors are logged by us, in JSON.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        listen = settings.metrics.listen
        if listen:
            self._metrics_server = MetricsServer(listen, self.metrics.registry, self._health_now)
            host, port = self._metrics_server.start()
            log.info(
                "metrics_listening", address=f"http://{host}:{port}", paths="/metrics /healthz"
            )
            if settings.metrics.beyond_loopback:
                log.warning(
                    "metrics_beyond_loopback",
                    listen=listen,
                    reason="/metrics and /healthz have no authentication; listen on 127.0.0.1 "
                    "or firewall the port",
                )
        log.info(
            "starting",
            mode=settings.orders.mode,
            instance=self.parts.owner,
            rules_version=self.parts.rules.version,
        )
        self.reloader.record_startup()
        self.metrics.set_rules_version(self.parts.rules.version)
        # Finish what an earlier process left half-done before saying READY.
        self._run_job("recovery", self._recovery)
        self._refresh_order_gauge()
        self._add_jobs(first=True)
        self.scheduler.start()
        self.notifier.ready(status=f"started; mode {settings.orders.mode}")
        log.info("ready", watchdog_seconds=self.notifier.watchdog_seconds)

    def _stop(self, signal_name: str) -> int:
        settings = self.parts.settings
        log.info("stopping", signal=signal_name)
        self.notifier.stopping(status=f"stopping on {signal_name}")
        self.parts.stop_requested.set()  # loops stop claiming; pacer waits end now
        self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + settings.daemon.stop_timeout_seconds
        while self._busy_jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        unfinished = self._busy_jobs()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        for client in self._retired_clients:
            client.close()
        self.notifier.close()
        if unfinished:
            # The leases of anything still in flight expire, and recovery settles them. Exit at
            # once: a normal exit would wait for the worker threads after all.
            log.error("stop_timeout", unfinished_jobs=unfinished)
            sys.stdout.flush()
            os._exit(1)
        log.info("stopped")
        return 0

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_signal = signal.Signals(signum).name

    def _on_reload_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload_signals += 1

    def _busy(self, name: str) -> bool:
        with self._running_lock:
            return bool(self._running.get(name))

    def _busy_jobs(self) -> list[str]:
        with self._running_lock:
            return sorted(name for name, count in self._running.items() if count)

    # --- jobs -----------------------------------------------------------------------------

    def _add_jobs(self, *, first: bool) -> None:
        """Schedule (or re-schedule, after a config reload) every job on its interval."""
        settings = self.parts.settings
        now = self.clock()
        jobs: list[tuple[str, Callable[[CycleSummary], None], float, datetime | None]] = [
            ("poll", self._poll, settings.source.poll_interval_seconds, now),
            ("send", self._send, settings.daemon.send_interval_seconds, now),
            ("recovery", self._recovery, settings.daemon.recovery_interval_seconds, None),
            (
                "status_sync",
                self._status_sync,
                settings.daemon.status_sync_interval_seconds,
                now + timedelta(seconds=30),
            ),
            ("notify", self._notify, settings.notify.interval_seconds, now + timedelta(seconds=5)),
            ("apply_news", self._apply_news, settings.daemon.apply_news_interval_seconds, now),
        ]
        jobs.append(
            (
                "audit_anchor",
                self._audit_anchor,
                settings.daemon.audit_anchor_interval_seconds,
                now,
            )
        )
        # Scheduled even while writeback.url is empty (a run then does nothing), so a SIGHUP
        # that sets it takes effect without a restart.
        jobs.append(
            (
                "writeback",
                self._writeback,
                settings.writeback.interval_seconds,
                now + timedelta(seconds=10),
            )
        )
        if settings.source.cursor_column is not None:
            # The gate in the poll skips it when a full pass ran recently (on any host).
            first_full = now + timedelta(seconds=min(60, settings.source.poll_interval_seconds))
            full_every = settings.source.full_scan_interval_seconds
            jobs.append(("full_pass", self._full_pass, full_every, first_full))
        for name, work, seconds, first_run in jobs:
            if first:
                extra = {"next_run_time": first_run} if first_run is not None else {}
                self.scheduler.add_job(
                    self._run_job, "interval", args=(name, work), seconds=seconds, id=name, **extra
                )
            else:
                job = self.scheduler.get_job(name)
                if job is not None and job.trigger.interval != timedelta(seconds=seconds):
                    self.scheduler.reschedule_job(name, trigger="interval", seconds=seconds)
        if first:
            self.scheduler.add_job(
                self.reloader.check_files, "interval", seconds=RULES_WATCH_SECONDS, id="rules_watch"
            )

    def _run_job(self, name: str, work: Callable[[CycleSummary], None]) -> None:
        """Run one job: count it, time it, log one line, feed metrics, health and the watchdog."""
        # Counted before the stop check, so a stopping daemon waits for any job that got past it.
        with self._running_lock:
            self._running[name] = self._running.get(name, 0) + 1
        if self.parts.stop_requested.is_set():
            with self._running_lock:
                self._running[name] -= 1
            return
        summary = CycleSummary()
        started = time.monotonic()
        error: str | None = None
        try:
            work(summary)
        except Exception as exc:  # a failing job must not kill the daemon
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.error("job_failed", job=name, error=error, exc_info=True)
        finally:
            with self._running_lock:
                self._running[name] -= 1
        duration = time.monotonic() - started
        self._after_job(name, summary, duration, error)

    def _after_job(
        self, name: str, summary: CycleSummary, duration: float, error: str | None
    ) -> None:
        now = self.clock()
        counts = summary.as_dict()
        busy = any(isinstance(value, int | float) and value for value in counts.values())
        if busy or error is not None or name not in IDLE_PROVES_NOTHING:
            self.liveness.progressed()
        if error is not None:
            error = REDACTOR.scrub_text(error)  # /healthz shows it; the log redacts on its own
        self.metrics.observe_job(name, duration, counts, error)  # rate-limit waits included
        if error is None:
            self.health.job_succeeded(name, now)
        else:
            self.health.job_failed(name, now, error)
        if name == "send" and error is None:
            self.health.set_sending_paused(summary.sending_paused)
        if name in ("send", "recovery") and error is None:
            # Each order counts: "N sends in a row failed" means N orders, not N job runs.
            if summary.placed or summary.rejected:
                self.health.send_succeeded(now)
            troubles = summary.retried + summary.unknown + summary.resend_covered + summary.failed
            for _ in range(troubles):
                self.health.send_failed(now, _send_trouble(summary))
        if name in ("poll", "full_pass"):
            self._after_poll(summary, now)
        if busy:  # an idle job moved no order: no need to count them again
            self._refresh_order_gauge()
        quiet = name in QUIET_JOBS and error is None and not busy
        # Orders a person must look at (not plannable, rejected, unknown) raise the line's level.
        attention = any(counts.get(key) for key in ("invalid", "rejected", "unknown"))
        emit = log.warning if attention else log.debug if quiet else log.info
        emit(
            "cycle",
            job=name,
            duration_ms=round(duration * 1000),
            error=error,
            **{key: value for key, value in counts.items() if value},
        )

    def _after_poll(self, summary: CycleSummary, now: datetime) -> None:
        if summary.source_error and not summary.poll_skipped:
            self.health.poll_failed(now, REDACTOR.scrub_text(summary.source_error))
        # Health and the gauge follow the shared checkpoint: with several hosts, a poll that
        # another host ran counts as this one's.
        try:
            with self.parts.state.connect() as connection:
                checkpoint = properties.load_checkpoint(connection, CHECKPOINT)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("checkpoint_unreadable", error=type(exc).__name__)
            return
        last = checkpoint.last_success_at
        if last is not None and not checkpoint.consecutive_failures:
            self.health.poll_succeeded(last)
            self.metrics.set_last_successful_poll(last)
        if not summary.poll_skipped:
            self._last_status = status_line(summary, now)
            self.notifier.status(self._last_status)
        if summary.orders_created and not self._busy("send"):
            # New orders go out now, not at the next send tick.
            with contextlib.suppress(JobLookupError, SchedulerNotRunningError):
                # (Both mean the daemon is stopping: the next daemon sends them.)
                self.scheduler.modify_job("send", next_run_time=self.clock())

    def _poll(self, summary: CycleSummary) -> None:
        self.reloader.run_guarded(
            poll_step, self.parts, self.clock, summary, respect_backoff=True, tick="poll"
        )

    def _full_pass(self, summary: CycleSummary) -> None:
        self.reloader.run_guarded(
            poll_step, self.parts, self.clock, summary, respect_backoff=True, tick="full"
        )

    def _send(self, summary: CycleSummary) -> None:
        # Each order sent counts as progress: a long queue drained under the rate limit keeps
        # one job busy for minutes, and the watchdog must not mistake that for a hang.
        def keep_alive() -> bool:
            self.liveness.progressed()
            return False

        send_due(self.parts, self.clock, summary, should_stop=keep_alive)

    def _recovery(self, summary: CycleSummary) -> None:
        recover(self.parts, self.clock(), summary)

    def _status_sync(self, summary: CycleSummary) -> None:
        reconcile_statuses(self.parts, self.clock(), summary)

    def _apply_news(self, summary: CycleSummary) -> None:
        self._applier.run(summary)

    def _audit_anchor(self, summary: CycleSummary) -> None:
        self.publish_audit_anchor()

    def publish_audit_anchor(self) -> tuple[int, str] | None:
        """Log and export the audit chain's head (row id and hash).

        The journal and Prometheus keep what was published, outside the state database: given
        back to `propready audit verify --anchor ID:HASH`, it proves that the rows up to it were
        neither changed nor cut off, even by someone who could rewrite the head row.
        """
        try:
            with self.parts.state.connect() as connection:
                head = chain_head(connection)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("audit_anchor_unreadable", error=type(exc).__name__)
            return None
        if head is None:
            log.error("audit_anchor_missing", reason="audit_chain_head row 1 is missing")
            return None
        row_id, row_hash = head
        log.info("audit_anchor", row_id=row_id, hash=row_hash, anchor=f"{row_id}:{row_hash}")
        self.metrics.set_audit_head(row_id, row_hash)
        return head

    def _notify(self, summary: CycleSummary) -> None:
        run = notify_step(self.parts, self.clock, summary, observer=self.metrics.notification)
        self.health.set_failing_channels(run.failing)
        self.metrics.set_failing_channels(run.failing, self.clock())

    def _writeback(self, summary: CycleSummary) -> None:
        writeback_step(self.parts, self.clock, summary)  # counts feed propready_writebacks_total

    def _refresh_order_gauge(self) -> None:
        try:
            with self.parts.state.connect() as connection:
                self.metrics.set_orders_by_state(outbox.count_by_state(connection))
        except sa.exc.SQLAlchemyError as exc:
            log.warning("order_counts_unreadable", error=type(exc).__name__)

    # --- health and watchdog ----------------------------------------------------------------

    def _health_now(self) -> HealthReport:
        return self.health.report(self.clock())

    def _heartbeat_seconds(self) -> float:
        watchdog = self.notifier.watchdog_seconds
        # systemd's advice: ping at half the timeout at the latest; a third leaves margin.
        return min(HEARTBEAT_SECONDS, watchdog / 3) if watchdog else HEARTBEAT_SECONDS

    def _beat(self) -> None:
        report = self._health_now()
        self.metrics.set_health(report.healthy)
        if self.liveness.alive():
            self.notifier.watchdog()
        else:
            log.error(
                "watchdog_starved",
                stall_seconds=self.liveness.stall_seconds,
                busy_jobs=self._busy_jobs(),
            )

    # --- reload ---------------------------------------------------------------------------

    def _reload(self) -> None:
        """SIGHUP: the config file, then the rule files; each refused on its own if bad."""
        self.notifier.reloading(status="reloading config and rules")
        log.info("reload_requested", signal="SIGHUP")
        try:
            self._reload_config()
            self.reloader.reload("SIGHUP")
            self.metrics.set_rules_version(self.parts.rules.version)
        finally:
            self.notifier.ready(status=self._last_status)

    def _reload_config(self) -> None:
        running = self.parts.settings
        try:
            loaded = load_settings(self.config_path)
        except ConfigError as exc:
            log.error("config_reload_refused", error=str(exc))
            self._audit(AuditKind.CONFIG_RELOAD_REFUSED, {"error": str(exc)})
            return
        change = merge_reloaded(running, loaded)
        if change.needs_restart:
            log.warning("config_restart_needed", keys=list(change.needs_restart))
        if not change.applied:
            log.info("config_unchanged", restart_needed=list(change.needs_restart))
            return
        new = change.settings
        REDACTOR.add_values(new.secret_values())  # before anything could log the new key
        with self.reloader.cycle_lock:  # between polls, never during one
            self.parts.settings = new
            if change.changed("planomatic", "requests_per_minute"):
                self.parts.pacer = pacer_for(new, self.parts.stop_requested)
            if change.changed("planomatic") or change.changed("orders", "mode"):
                self._replace_client(new)
        if change.changed("log", "level"):
            configure_logging(fmt=new.log.format, level=new.log.level)
        if change.changed("daemon", "watchdog_stall_seconds"):
            self.liveness.stall_seconds = new.daemon.watchdog_stall_seconds
        self.health.set_poll_stale_after(poll_stale_after(new))
        self._add_jobs(first=False)
        log.info("config_reloaded", keys=list(change.applied))
        self._audit(
            AuditKind.CONFIG_RELOADED,
            {"applied": list(change.applied), "restart_needed": list(change.needs_restart)},
        )

    def _replace_client(self, settings: Settings) -> None:
        old = self.parts.client
        self.parts.client = (
            None
            if settings.orders.mode == "dry_run"
            else vendor_client(settings, self.metrics.vendor_call)
        )
        if old is not None:
            # A send in flight may still be using it: close it when the daemon stops.
            self._retired_clients.append(old)

    def _audit(self, kind: AuditKind, detail: dict[str, Any]) -> None:
        try:
            with self.parts.state.begin() as connection:
                audit.record(connection, kind, self.clock(), detail=detail)
        except sa.exc.SQLAlchemyError as exc:
            log.error("audit_failed", kind=kind, error=type(exc).__name__)


def _send_trouble(summary: CycleSummary) -> str:
    parts = [
        f"{value} {name}"
        for name, value in (
            ("retried", summary.retried),
            ("unknown", summary.unknown),
            ("re-sent after an ambiguous answer", summary.resend_covered),
            ("failed", summary.failed),
        )
        if value
    ]
    return "sends did not reach a definite answer: " + ", ".join(parts)


def status_line(summary: CycleSummary, now: datetime) -> str:
    kind = "full pass" if summary.full_pass else "poll"
    if summary.source_error:
        return f"{kind} at {now:%H:%M:%S}Z failed: {summary.source_error}"
    return (
        f"{kind} at {now:%H:%M:%S}Z: {summary.rows} rows, {summary.events} events, "
        f"{summary.orders_created} orders planned"
    )
