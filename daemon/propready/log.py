"""structlog set-up: JSON lines for journald, readable lines on a terminal, secrets masked.

Secrets are masked twice: by field name (any key that names a secret, at any depth) and by value
(the API key loaded at start, wherever it appears, also inside exception text). Tracebacks are
rendered without local variables, because structlog's default dict tracebacks include them and
locals are exactly where an API key or an access code sits.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

MASK = "***"
SECRET_FIELD_NAMES = frozenset(
    {
        "api_key",
        "access_code",
        "lockbox_code",
        "keypad_code",
        "password",
        "authorization",
        "slockboxcode",
    }
)


class SecretRedactor:
    """A structlog processor that masks secret fields and known secret values."""

    def __init__(self, secret_values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self.add_values(secret_values)

    def add_values(self, values: Iterable[str]) -> None:
        # Very short values would mask ordinary words; an API key is never that short.
        self._values.update(v for v in values if v and len(v) >= 4)

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        return {key: self.clean(key, value) for key, value in event_dict.items()}

    def clean(self, key: str, value: Any) -> Any:
        """`value` with secrets masked; `key` is the field name it sits under."""
        if key.lower() in SECRET_FIELD_NAMES and value not in (None, ""):
            return MASK
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, Mapping):
            return {k: self.clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.clean(key, item) for item in value]
        return value

    def scrub_text(self, text: str) -> str:
        for secret in self._values:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


REDACTOR = SecretRedactor()


def redact(data: Mapping[str, Any]) -> dict[str, Any]:
    """The same masking for anything else that leaves the process (audit details, CLI output)."""
    return {key: REDACTOR.clean(key, value) for key, value in data.items()}


def _scrub_rendered(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    # Runs after exceptions are rendered to text, so a secret inside an exception message or a
    # traceback line is masked too.
    return REDACTOR(logger, method, event_dict)


def configure_logging(
    *,
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    secret_values: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the standard library logging it shares a stream with."""
    REDACTOR.add_values(secret_values)
    out = stream or sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        REDACTOR,
    ]
    renderer: Processor
    if use_console:
        tail: list[Processor] = [
            structlog.dev.set_exc_info,
            _scrub_rendered,
        ]
        renderer = structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.plain_traceback, colors=out.isatty()
        )
    else:
        tail = [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            _scrub_rendered,
        ]
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # httpx logs every request URL at INFO; keep third-party chatter at WARNING.
    logging.basicConfig(
        level=logging.WARNING, stream=out, format="%(levelname)s %(name)s %(message)s"
    )
    for noisy in ("httpx", "httpcore", "apscheduler", "alembic", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
