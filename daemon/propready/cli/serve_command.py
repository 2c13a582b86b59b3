"""`propready serve`: the webhook receiver and the web console until SIGTERM."""

from __future__ import annotations

import gc
import signal
from types import FrameType

import click
import structlog

from propready.adapters.store.reachability import StateUnavailable, require_state_at_head
from propready.cli.context import settings_from
from propready.receiver.metrics import ServeMetrics
from propready.receiver.server import ListenError, ReceiverServer
from propready.runtime.notify import SystemdNotifier
from propready.wiring import serve_listeners, serve_state_engine

log = structlog.get_logger("propready.serve")


@click.command("serve")
@click.pass_context
def serve_command(ctx: click.Context) -> None:
    """Receive PlanOmatic's webhooks and store each delivery before acknowledging it.

    Serves POST /webhooks/planomatic/TOKEN on [webhooks] listen (with GET /healthz and
    GET /metrics for loopback); the daemon (`propready run`) applies what was stored. Only the
    configured listeners start, and with none configured it refuses to start (exit 2). Put it
    behind a TLS reverse proxy that forwards only the webhook path (see the runbook). The token
    comes from [webhooks] token, better the systemd credential webhooks__token; during a
    rotation [webhooks] previous_token is accepted too. SIGTERM finishes the deliveries in
    flight and exits 0.

    With [console] listen set it also serves the web console on that address (its own
    listener): attention, orders, homes, spend, rules and the audit log for the users of
    `propready users` (or behind an authenticating proxy, [console] auth = "proxy").

    \b
    Examples:
      propready --config /etc/propready/propready.toml serve
      curl -s http://127.0.0.1:8710/healthz
      xdg-open http://127.0.0.1:8720/    # the console, with [console] listen set
    """
    settings = settings_from(ctx, logs_to_stdout=True)
    if not settings.webhooks.listen and not settings.console.listen:
        click.echo(
            "propready: nothing to serve: set [webhooks] listen (for example "
            '"127.0.0.1:8710") and [webhooks] token, and/or [console] listen (for example '
            '"127.0.0.1:8720")',
            err=True,
        )
        ctx.exit(2)
    engine = serve_state_engine(settings)
    try:
        require_state_at_head(engine, settings.state.url)
        metrics = ServeMetrics()
        server = ReceiverServer(serve_listeners(settings, engine, metrics))
    except (StateUnavailable, ListenError) as exc:
        engine.dispose()
        raise click.ClickException(str(exc)) from None
    notifier = SystemdNotifier.from_environ()

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("serve_stopping", signal=signal.Signals(signum).name)
        notifier.stopping()
        server.request_stop()

    def ready() -> None:
        urls = server.urls()
        log.info("serve_listening", **urls)
        notifier.ready(status="listening on " + ", ".join(f"{k} {v}" for k, v in urls.items()))

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    # What start-up built (modules, the schema, templates, the apps) lives as long as the
    # process: moved out of the collector's generations, a full collection during a request no
    # longer walks it (the console's start page had its slowest answers during those).
    gc.freeze()
    try:
        server.run(on_ready=ready)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
        engine.dispose()
        notifier.close()
    log.info("serve_stopped")
