"""`[writeback]`: write delivered orders back to the PM system (design.md 8.2); off while `url`
is empty.

`url` is a writable SQLAlchemy URL (usually to the PM database) and a secret: give it as the
systemd credential `writeback__url` or `PROPREADY_WRITEBACK__URL` rather than in the file.
`statement` is one SQL statement with named parameters (core/writeback.py PARAMETER_NAMES),
idempotent by design: after a crash between the target's commit and the state database's it
runs again. A malformed URL or statement is a one-line config error when the file loads.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from propready.core.writeback import RetryPolicy, statement_problem


class WritebackSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: SecretStr = SecretStr("")
    statement: str = ""
    interval_seconds: float = Field(default=30, gt=0, le=3600)
    timeout_seconds: float = Field(default=30, gt=0, le=600)
    retry_base_seconds: float = Field(default=60, gt=0, le=86400)
    retry_max_seconds: float = Field(default=3600, gt=0, le=86400)
    give_up_after_hours: float = Field(default=48, gt=0)

    @field_validator("url")
    @classmethod
    def _usable_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        if url:
            problem = _url_problem(url)
            if problem:
                raise ValueError(problem)  # never the URL itself: it may hold a password
        return SecretStr(url)

    @field_validator("statement")
    @classmethod
    def _one_statement_with_known_parameters(cls, value: str) -> str:
        if value.strip():
            from propready.adapters.writeback_target import parse_statement

            count, names = parse_statement(value)
            problem = statement_problem(names, count)
            if problem:
                raise ValueError(problem)
        return value.strip()

    @model_validator(mode="after")
    def _statement_when_on(self) -> WritebackSettings:
        if self.enabled and not self.statement:
            raise ValueError(
                "writeback.statement is required when writeback.url is set (one SQL statement "
                "with named parameters such as :photo_manage_link and :external_property_id)"
            )
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("writeback.retry_max_seconds must be at least retry_base_seconds")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.url.get_secret_value())

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.retry_base_seconds,
            self.retry_max_seconds,
            timedelta(hours=self.give_up_after_hours),
        )

    def secret_values(self) -> list[str]:
        """The URL and its password, for the log redactor."""
        url = self.url.get_secret_value()
        if not url:
            return []
        from sqlalchemy.engine import make_url

        password = make_url(url).password or ""
        return [value for value in (url, password) if value]


def _url_problem(url: str) -> str | None:
    """Why the URL can never work (scheme, syntax, driver not installed), or None."""
    import sqlalchemy as sa

    from propready.adapters.database_urls import DatabaseSettingError, parse
    from propready.adapters.writeback_target import SETTING, create_target_engine

    try:
        parse(SETTING, url)
        create_target_engine(url, 1).dispose()  # loads the dialect and its driver, no connection
    except DatabaseSettingError as exc:
        return str(exc).removeprefix(f"{SETTING}: ")
    except sa.exc.NoSuchModuleError:
        return "unknown database kind (use e.g. postgresql+psycopg://USER@HOST/DATABASE)"
    except ModuleNotFoundError as exc:
        return f"the database driver is not installed ({exc.name})"
    except (sa.exc.ArgumentError, ValueError, TypeError) as exc:
        return f"not a usable database URL ({type(exc).__name__})"
    return None
