"""`propready sandbox`: serve the PlanOmatic V3 Order API look-alike until told to stop."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType

import click
import structlog

from propready.adapters.catalog_file import load_catalog
from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.sandbox.config import DEFAULT_API_KEY, DEFAULT_BILLING_ENTITIES
from propready.adapters.sandbox.faults import parse_fault_spec

logger = structlog.get_logger()


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on; 0 picks a free one (see --url-file).",
)
@click.option(
    "--api-key",
    "api_keys",
    metavar="KEY",
    multiple=True,
    default=(DEFAULT_API_KEY,),
    show_default=True,
    help="An api_key the sandbox accepts; repeat for several.",
)
@click.option(
    "--billing-entity",
    "billing_entities",
    metavar="SLUG",
    multiple=True,
    default=tuple(sorted(DEFAULT_BILLING_ENTITIES)),
    show_default=True,
    help="A billing_entity_slug linked to every key; repeat for several.",
)
@click.option(
    "--rate-limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Requests per window per api key before HTTP 429; 0 means unlimited.",
)
@click.option(
    "--rate-window",
    metavar="SECONDS",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Length of the fixed rate-limit window.",
)
@click.option(
    "--duplicate-hours",
    metavar="H",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Reject a second live order for the same external_property_id within H hours; 0 = off.",
)
@click.option(
    "--duplicate-message",
    metavar="WORD",
    default="duplicate",
    show_default=True,
    help="The error keyword for a duplicate (the vendor's real one is not public).",
)
@click.option(
    "--allow-dash-in-metadata-keys",
    is_flag=True,
    help="Also accept '-' in metadata keys (the vendor's pages disagree).",
)
@click.option(
    "--latency",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Delay added before every answer, like a distant server.",
)
@click.option(
    "--fault",
    "faults",
    metavar="ACTION=KIND[,KIND...]",
    multiple=True,
    help="Faults for the next requests of ACTION (create, retrieve, cancel), in order: 429, 500 "
    "(before saving), 502_html, 500_after_save, drop (save, then close the connection), stall "
    "(save, then answer nothing for --stall-seconds). Repeatable.",
)
@click.option(
    "--stall-seconds",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="How long a `stall` fault keeps the connection silent before closing it.",
)
@click.option(
    "--webhook-url",
    metavar="URL",
    help="Send the order-status webhooks here, like the vendor (e.g. propready serve's "
    "http://127.0.0.1:8710/webhooks/planomatic/TOKEN).",
)
@click.option(
    "--webhook-retry-seconds",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    default=360.0,
    show_default=True,
    help="Wait between tries of a delivery that got no 2xx; later ones wait behind it.",
)
@click.option(
    "--webhook-attempts",
    metavar="N",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Tries per delivery before it is dropped (the vendor would e-mail it instead).",
)
@click.option(
    "--webhook-shape",
    type=click.Choice(["flat", "nested"]),
    default="flat",
    show_default=True,
    help="flat: the retrieve order with `event`; nested: {event, event_datetime, order}.",
)
@click.option(
    "--webhook-event",
    "webhook_events",
    metavar="EVENT",
    multiple=True,
    help="Subscribe to this event only (repeatable); default: every event.",
)
@click.option(
    "--webhook-duplicates",
    metavar="N",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Test knob: send every delivery N extra times.",
)
@click.option(
    "--webhook-out-of-order",
    is_flag=True,
    help="Test knob: send two queued deliveries newer first.",
)
@click.option(
    "--auto-advance",
    metavar="SECONDS",
    type=click.FloatRange(min=0, min_open=True),
    help="Walk every order one status along every SECONDS, until delivered.",
)
@click.option(
    "--url-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="After binding, write the base URL here, so scripts using --port 0 learn the port.",
)
def sandbox_command(
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    billing_entities: tuple[str, ...],
    rate_limit: int,
    rate_window: float,
    duplicate_hours: float,
    duplicate_message: str,
    allow_dash_in_metadata_keys: bool,
    latency: float,
    faults: tuple[str, ...],
    stall_seconds: float,
    webhook_url: str | None,
    webhook_retry_seconds: float,
    webhook_attempts: int,
    webhook_shape: str,
    webhook_events: tuple[str, ...],
    webhook_duplicates: int,
    webhook_out_of_order: bool,
    auto_advance: float | None,
    url_file: Path | None,
) -> None:
    """Serve a local look-alike of the PlanOmatic V3 Order API until SIGTERM or Ctrl-C.

    It answers POST /api/v3/orders/create, /retrieve and /cancel like the vendor: the same
    validation errors, rate limit and optional duplicate protection, with orders kept in memory.
    Point propready's [planomatic] base_url at it for trials.

    Back-office control: POST /_sandbox/advance with {"order_id": N} moves an order one
    status along (new_request, ordered, scheduling, scheduled, on_site, post_processing,
    completed), or to {"to": S}: a status, or the steps delivered, unable_to_complete and
    canceled (with an optional "reason").

    Webhooks: with --webhook-url every status step sends its event (order.received,
    order.processed, appointment.scheduled, order.post_processing, order.delivered with
    appointments, links and photos, order.canceled, appointment.unable_to_complete, ...) in
    order, retried like the vendor. GET /_sandbox/webhooks shows the queue and the delivery
    log; POST it {"pause": true|false, "reverse": true, "resend": SEQ, "duplicates": N}.

    \b
    Example: propready sandbox --port 8765 --duplicate-hours 24
    Example: propready sandbox --rate-limit 100 --rate-window 6 --latency 0.1
    Example: propready sandbox --fault create=429,drop --stall-seconds 5
    Example: propready sandbox --auto-advance 2 --webhook-retry-seconds 5 \\
               --webhook-url http://127.0.0.1:8710/webhooks/planomatic/TOKEN
    """
    queued: dict[str, list[str]] = {}
    for spec in faults:
        try:
            action, kinds = parse_fault_spec(spec)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--fault") from None
        queued.setdefault(action, []).extend(kinds)
    entities = frozenset(billing_entities)
    config = SandboxConfig(
        api_keys=dict.fromkeys(api_keys, entities),
        catalog=load_catalog(),
        rate_limit=rate_limit,
        rate_window_seconds=rate_window,
        duplicate_threshold_hours=duplicate_hours,
        duplicate_message=duplicate_message,
        allow_dash_in_metadata_keys=allow_dash_in_metadata_keys,
        latency_seconds=latency,
        stall_seconds=stall_seconds,
        faults={action: tuple(kinds) for action, kinds in queued.items()},
        webhook_url=webhook_url,
        webhook_retry_seconds=webhook_retry_seconds,
        webhook_attempts=webhook_attempts,
        webhook_shape="nested" if webhook_shape == "nested" else "flat",
        webhook_duplicates=webhook_duplicates,
        webhook_out_of_order=webhook_out_of_order,
        webhook_events=frozenset(webhook_events) if webhook_events else None,
        auto_advance_seconds=auto_advance,
    )
    try:
        server = SandboxServer(config, host=host, port=port)
    except OSError as exc:  # the port is taken, or the host is not an address of this machine
        reason = (exc.strerror or str(exc)).lower()
        raise click.ClickException(
            f"sandbox --port: cannot listen on {host}:{port} ({reason})"
        ) from None
    _serve_until_signalled(server, url_file)


def _serve_until_signalled(server: SandboxServer, url_file: Path | None) -> None:
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    # Handlers go in before the URL is announced, so a signal sent the moment a script learns
    # the URL already leads to a clean stop.
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        if url_file is not None:
            _write_atomically(url_file, server.url)
        click.echo(f"sandbox listening on {server.url}")
        stop_requested.wait()
        logger.info("sandbox.stopping", requests_seen=server.requests_seen())
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _write_atomically(path: Path, text: str) -> None:
    # A script polling for the file must never read it half-written.
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
