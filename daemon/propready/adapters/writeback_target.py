"""The write-back target: the operator's statement on `[writeback] url`, any SQLAlchemy URL.

Errors (`WritebackError`) carry one line: for a connection that cannot be made, the target
(host:port or the SQLite file) and the reason; for a statement the database refused, the
driver's first line. The URL's password, and any other secret given, is masked in both.

Timeouts: `timeout_seconds` bounds connecting and, where the driver allows it, each statement
(PostgreSQL: connect_timeout and statement_timeout; SQLite: the busy timeout; MySQL drivers:
connect/read/write timeouts). Other drivers get what their URL's query string sets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlparse
from sqlalchemy.engine import make_url

from propready.adapters.database_urls import parse, target, unreachable
from propready.core.writeback import WritebackParams, error_line

SETTING = "writeback.url"

# Values for `check`: a statement run with them in a rolled-back transaction changes no home.
PROBE_PARAMS = WritebackParams(
    external_property_id="propready-check-no-such-home",
    external_order_id="propready-check-no-such-order",
    vendor_order_id="0",
    order_status="completed",
    delivered_at=datetime(2000, 1, 1, tzinfo=UTC),
    photo_manage_link="https://example.invalid/propready-check",
    zillow_3d_link=None,
    photo_count=0,
)


class WritebackError(Exception):
    """The statement did not run to a commit on the target; the message is one safe line."""


def parse_statement(text: str) -> tuple[int, list[str]]:
    """How many statements `text` holds (a real SQL lexer: literals and comments may hold `;`)
    and the `:name` parameters SQLAlchemy will bind in it (what runs is `sqlalchemy.text`)."""
    statements = [
        bare
        for piece in sqlparse.split(text)
        if (bare := sqlparse.format(piece, strip_comments=True).strip().strip(";").strip())
    ]
    names = list(sa.text(text).compile().params) if statements else []
    return len(statements), names


def create_target_engine(url: str, timeout_seconds: float) -> sa.Engine:
    """An engine for the target with the timeouts its driver understands."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, like the other URLs
    backend = parsed.get_backend_name()
    whole_seconds = max(1, math.ceil(timeout_seconds))
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args["connect_timeout"] = whole_seconds
    elif backend == "sqlite":
        connect_args["timeout"] = timeout_seconds
    elif backend == "mysql":
        connect_args.update(
            connect_timeout=whole_seconds, read_timeout=whole_seconds, write_timeout=whole_seconds
        )
    engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    if backend == "postgresql":

        @sa.event.listens_for(engine, "connect")
        def _statement_timeout(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"SET statement_timeout = {int(timeout_seconds * 1000)}")
            cursor.close()
            dbapi_connection.commit()

    return engine


class WritebackTarget:
    """The PM database the statement writes to; open it for a run, close it after."""

    def __init__(self, url: str, timeout_seconds: float, *, secrets: Sequence[str] = ()) -> None:
        self._parsed = parse(SETTING, url)
        self._secrets = [s for s in (*secrets, self._parsed.password or "") if s]
        self.engine = create_target_engine(url, timeout_seconds)
        self._dbapi_error: type[BaseException] = self.engine.dialect.loaded_dbapi.Error

    @property
    def datetime_as_text(self) -> bool:
        return self._parsed.get_backend_name() == "sqlite"

    def describe(self) -> str:
        """Where the target is, without credentials."""
        return target(self._parsed)

    def execute(
        self,
        statement: str,
        params: WritebackParams,
        *,
        before_commit: Callable[[], None] | None = None,
    ) -> int:
        """Run the statement in its own transaction and commit; the rows it touched (-1 when
        the driver does not say). WritebackError when it did not commit."""
        values = params.bind_values(datetime_as_text=self.datetime_as_text)
        connection = self._connect()
        try:
            try:
                with connection.begin():
                    result = connection.execute(sa.text(statement), values)
                    rows = int(result.rowcount) if result.rowcount is not None else -1
                    if before_commit is not None:
                        before_commit()
            except (sa.exc.SQLAlchemyError, self._dbapi_error) as exc:
                raise WritebackError(self._statement_error(exc)) from None
        finally:
            self._close_quietly(connection)
        return rows

    def probe(self, statement: str) -> int:
        """Run the statement with harmless values in a transaction that is rolled back: the
        target answers, the table and columns exist, the parameters bind. WritebackError if not.
        """
        values = PROBE_PARAMS.bind_values(datetime_as_text=self.datetime_as_text)
        connection = self._connect()
        try:
            transaction = connection.begin()
            try:
                result = connection.execute(sa.text(statement), values)
                return int(result.rowcount) if result.rowcount is not None else -1
            except (sa.exc.SQLAlchemyError, self._dbapi_error) as exc:
                raise WritebackError(self._statement_error(exc)) from None
            finally:
                transaction.rollback()
        finally:
            self._close_quietly(connection)

    def close(self) -> None:
        self.engine.dispose()

    def _connect(self) -> sa.Connection:
        database = self._parsed.database or ""
        is_file = self.datetime_as_text and database not in ("", ":memory:")
        if is_file and not Path(database).is_file():  # SQLite would create an empty file
            raise WritebackError(f"no SQLite file at {database}")
        try:
            return self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise WritebackError(self._scrub(unreachable(self._parsed, exc))) from None
        except (sa.exc.SQLAlchemyError, self._dbapi_error) as exc:
            raise WritebackError(
                f"cannot connect to {self.describe()} ({self._scrub(str(exc))})"
            ) from None

    def _statement_error(self, exc: BaseException) -> str:
        if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
            text = str(exc.orig)
        else:
            text = str(exc)
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        return error_line(text, self._secrets)

    def _close_quietly(self, connection: sa.Connection) -> None:
        # A connection the outage broke cannot roll back; the error already says what happened.
        try:
            connection.close()
        except (sa.exc.SQLAlchemyError, self._dbapi_error):
            connection.invalidate()
