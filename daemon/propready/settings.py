"""Configuration: one TOML file, environment overrides, systemd credentials; typed and frozen.

Precedence, highest first: environment variables `PROPREADY_<SECTION>__<KEY>`, systemd
credentials (files in `$CREDENTIALS_DIRECTORY` named `<section>__<key>`, e.g.
`planomatic__api_key`), then the TOML file. pydantic-settings does the environment parsing and the
deep merge; this module adds the TOML file, the credentials source and error messages that name
the file, line, key and reason (`ConfigError`), which the CLI prints as one line and exit code 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlparse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from propready.adapters.database_urls import same_database
from propready.notify_settings import NotifySettings
from propready.writeback_settings import WritebackSettings

DEFAULT_CONFIG_PATH = Path("/etc/propready/propready.toml")
ENV_PREFIX = "PROPREADY_"


DEFAULT_SECRET_COLUMNS = ("access_code", "lockbox_location")


def sql_statements(text: str) -> list[str]:
    """The statements in `text`, comments and empty statements left out (string literals,
    quoted names, dollar quotes and comments may hold `;`, so this needs a real SQL lexer)."""
    statements = []
    for statement in sqlparse.split(text):
        bare = sqlparse.format(statement, strip_comments=True).strip().strip(";").strip()
        if bare:
            statements.append(bare)
    return statements


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line meant for an operator."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateSettings(_Section):
    url: str = "sqlite:////var/lib/propready/state.db"


class SourceSettings(_Section):
    url: str = Field(min_length=1)
    query: str = Field(min_length=1)
    cursor_column: str | None = None
    poll_interval_seconds: int = Field(default=300, ge=1)
    full_scan_interval_seconds: int = Field(default=21600, ge=1)
    cursor_overlap_seconds: int = Field(default=300, ge=0)
    # A cursor value later than now plus this is a data error (a 9999-12-31 placeholder): the
    # row is processed, but the checkpoint does not move to it.
    cursor_future_tolerance_seconds: int = Field(default=3600, ge=0)
    timezone: str = "UTC"
    batch_size: int = Field(default=5000, ge=1, le=1_000_000)
    # Column kinds where the name does not say it: {"dtmoveout" = "date", "ibeds" = "integer"}.
    types: dict[str, Literal["date", "timestamp", "number", "integer", "boolean", "text"]] = Field(
        default_factory=dict
    )
    # Columns (names as the query returns them) whose values are secrets: masked wherever facts
    # are shown or stored, and scrubbed from error texts. The default is what lets someone into
    # a home: the access code and where the lockbox is.
    secret_columns: tuple[str, ...] = DEFAULT_SECRET_COLUMNS

    @field_validator("query")
    @classmethod
    def _single_statement(cls, value: str) -> str:
        count = len(sql_statements(value))
        if count == 0:
            raise ValueError("is empty (only comments or semicolons)")
        if count > 1:
            raise ValueError(
                f"must be a single SELECT statement, found {count} separated by ';' "
                "(propready wraps it as a subquery and never runs anything else)"
            )
        return value

    @field_validator("secret_columns")
    @classmethod
    def _column_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", name):
                raise ValueError(f"{name!r} is not a column name")
        if "external_property_id" in value:
            raise ValueError("external_property_id names the home everywhere; it cannot be secret")
        if len(set(value)) != len(value):
            raise ValueError("lists a column twice")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @field_validator("cursor_column")
    @classmethod
    def _plain_column(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
            raise ValueError("must be a plain column name returned by the query")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class RulesSettings(_Section):
    path: Path = Path("/etc/propready/rules")
    catalog_path: Path | None = None


class OrdersSettings(_Section):
    mode: Literal["live", "dry_run", "approval"] = "live"
    duplicate_window_hours: float = Field(default=72, ge=0)
    first_sight: Literal["ignore", "fire"] = "ignore"
    max_attempts: int = Field(default=8, ge=1)
    # Reconciliation: the status_sync job retrieves only placed orders with no news from the
    # vendor (webhook or retrieve) for this many hours, the longest without news first.
    reconcile_after_hours: float = Field(default=24, gt=0, le=8760)


class PlanomaticSettings(_Section):
    base_url: str = "https://api.planomatic.com"
    api_key: SecretStr = SecretStr("")
    requests_per_minute: int = Field(default=50, ge=1, le=6000)
    timeout_seconds: float = Field(default=30, gt=0, le=600)
    vendor_duplicate_protection_hours: float = Field(default=0, ge=0)
    # The largest share of requests_per_minute that reconciliation retrieves may use; creates
    # always keep the rest.
    sync_share: float = Field(default=0.1, gt=0, le=0.5)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must start with https:// (or http:// for a local sandbox)")
        if "api_key" in value:
            raise ValueError("must not carry the api key; set planomatic.api_key instead")
        # The API key travels in the request body: plain http would hand it to every hop.
        if value.startswith("http://") and not _is_loopback(urlsplit(value).hostname or ""):
            raise ValueError(
                "https is required (http:// only for a sandbox on 127.0.0.1, ::1 or localhost)"
            )
        return value.rstrip("/")


class MetricsSettings(_Section):
    listen: str = "127.0.0.1:9464"  # "" turns the endpoint off

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return _listen_address(value, "127.0.0.1:9464")

    @property
    def beyond_loopback(self) -> bool:
        """Whether the endpoint is reachable from other hosts (it has no authentication)."""
        if not self.listen:
            return False
        host = self.listen.rpartition(":")[0].strip("[]")
        if host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True  # a host name: whatever it resolves to, it is not known to be loopback


def _listen_address(value: str, example: str) -> str:
    """HOST:PORT, or "" for off."""
    if value == "":
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT, for example {example}")
    return value


class WebhooksSettings(_Section):
    """`propready serve`'s webhook receiver (design.md 8.2); off while `listen` is empty."""

    listen: str = ""  # HOST:PORT, e.g. 127.0.0.1:8710, behind a TLS reverse proxy
    # The secret in the callback URL (/webhooks/planomatic/TOKEN). Better as the systemd
    # credential webhooks__token than in the file.
    token: SecretStr = SecretStr("")
    # The token being retired during a rotation: accepted too until it is removed.
    previous_token: SecretStr = SecretStr("")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return _listen_address(value, "127.0.0.1:8710")

    @field_validator("token", "previous_token")
    @classmethod
    def _url_safe(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret and not re.fullmatch(r"[A-Za-z0-9_\-.~]{24,200}", secret):
            # Not echoed: the message ends up on a terminal and in logs.
            raise ValueError(
                "must be 24 to 200 URL-safe characters (letters, digits, - _ . ~); "
                "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @model_validator(mode="after")
    def _token_when_listening(self) -> WebhooksSettings:
        if self.listen and not self.token.get_secret_value():
            raise ValueError(
                "webhooks.token is required when webhooks.listen is set "
                "(a credential named webhooks__token, or PROPREADY_WEBHOOKS__TOKEN)"
            )
        return self

    def valid_tokens(self) -> list[str]:
        """Every token a delivery may carry: the current one and, during a rotation, the old."""
        tokens = (self.token.get_secret_value(), self.previous_token.get_secret_value())
        return [token for token in tokens if token]


# --- [console]: the web console served by `propready serve` -----------------------------------

CONSOLE_SECRET_MIN = 32


class ConsoleSettings(_Section):
    """The web console (`propready serve`); off while `listen` is empty."""

    listen: str = ""  # HOST:PORT, e.g. 127.0.0.1:8720, behind a TLS reverse proxy
    # password: users in the state database (`propready users add`); proxy: a reverse proxy
    # that authenticated the person (oauth2-proxy) names them in `proxy_user_header`.
    auth: Literal["password", "proxy"] = "password"
    proxy_user_header: str = Field(default="X-Forwarded-User", pattern=r"^[A-Za-z0-9-]{1,100}$")
    # Addresses (or networks) of the reverse proxies whose X-Forwarded-Proto and user header
    # are believed; from any other peer those headers are ignored. Never "*".
    trusted_proxies: tuple[str, ...] = ()
    # Signs the session and CSRF cookies; better as the systemd credential
    # console__session_secret. At least 32 characters. Empty: a key generated once and kept in
    # the state database (table console_secret), shared by every `serve` process.
    session_secret: SecretStr = SecretStr("")
    # Mark cookies Secure (sent over https only); plain http on loopback still works.
    cookie_secure: bool = True
    session_hours: float = Field(default=12, gt=0, le=24 * 30)
    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_lockout_minutes: float = Field(default=15, gt=0, le=24 * 60)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return _listen_address(value, "127.0.0.1:8720")

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (no host names, never *)"
                ) from None
        return value

    @field_validator("session_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < CONSOLE_SECRET_MIN:
            raise ValueError(
                f"must be at least {CONSOLE_SECRET_MIN} characters; generate one with: "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @model_validator(mode="after")
    def _complete_when_listening(self) -> ConsoleSettings:
        if not self.listen:
            return self
        if self.auth == "proxy" and not self.trusted_proxies:
            raise ValueError(
                'console.trusted_proxies is required with auth = "proxy" (the reverse '
                'proxy\'s address, e.g. ["127.0.0.1"])'
            )
        return self

    def is_trusted_proxy(self, host: str | None) -> bool:
        """Whether a peer address is one of `trusted_proxies`."""
        if not host:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(
            address in ipaddress.ip_network(entry, strict=False) for entry in self.trusted_proxies
        )


class DaemonSettings(_Section):
    """How `propready run` schedules its jobs, shares work with other hosts, and stops."""

    # Names this host in order leases and logs; hosts sharing a PostgreSQL state database need
    # distinct names. Empty: the host name.
    instance_name: str = Field(default="", max_length=100, pattern=r"^[A-Za-z0-9_.@-]*$")
    send_interval_seconds: float = Field(default=10, gt=0, le=3600)
    recovery_interval_seconds: float = Field(default=60, gt=0, le=86400)
    status_sync_interval_seconds: float = Field(default=900, gt=0, le=86400)
    # How often stored webhook deliveries are applied to orders (idle: one indexed SELECT).
    apply_news_interval_seconds: float = Field(default=0.5, ge=0.05, le=3600)
    # An order being sent is leased this long; another host takes it over once it expires.
    lease_seconds: float = Field(default=300, ge=5, le=86400)
    stop_timeout_seconds: float = Field(default=45, gt=0, le=3600)
    # The systemd watchdog is fed only while some job has finished within this many seconds.
    watchdog_stall_seconds: float = Field(default=600, ge=1, le=86400)
    # How often the audit chain's head is published (log event audit_anchor and a metric).
    audit_anchor_interval_seconds: float = Field(default=900, ge=10, le=86400)


class LogSettings(_Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    """The whole configuration. Construct it with `load_settings`, not directly."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    state: StateSettings = StateSettings()
    source: SourceSettings
    rules: RulesSettings = RulesSettings()
    orders: OrdersSettings = OrdersSettings()
    planomatic: PlanomaticSettings = PlanomaticSettings()
    metrics: MetricsSettings = MetricsSettings()
    daemon: DaemonSettings = DaemonSettings()
    log: LogSettings = LogSettings()
    webhooks: WebhooksSettings = WebhooksSettings()
    notify: NotifySettings = NotifySettings()
    writeback: WritebackSettings = WritebackSettings()  # off while url is empty
    console: ConsoleSettings = ConsoleSettings()  # the web console (`propready serve`)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init data, so it ranks lowest.
        return (env_settings, CredentialsSource(settings_cls), init_settings)

    @model_validator(mode="after")
    def _lease_outlasts_a_request(self) -> Settings:
        # A lease shorter than one request would let another host re-send an order whose first
        # request is still in flight.
        if self.daemon.lease_seconds <= self.planomatic.timeout_seconds:
            raise ValueError(
                f"daemon.lease_seconds ({self.daemon.lease_seconds:g}) must be longer than "
                f"planomatic.timeout_seconds ({self.planomatic.timeout_seconds:g})"
            )
        return self

    def secret_values(self) -> list[str]:
        """Secret strings the log redactor must mask wherever they appear: the API key, the
        webhook tokens, the notification URLs' secrets and the database passwords (a driver's
        error text may carry a connection string)."""
        values = [
            self.planomatic.api_key.get_secret_value(),
            *self.webhooks.valid_tokens(),
            *self.notify.secret_values(),
            *self.writeback.secret_values(),
            self.console.session_secret.get_secret_value(),
        ]
        for url in (self.state.url, self.source.url):
            try:
                values.append(make_url(url).password or "")
            except ArgumentError:
                continue
        return [value for value in values if value]


class CredentialsSource(PydanticBaseSettingsSource):
    """systemd credentials (`LoadCredential=planomatic__api_key:/path`): one file per key."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds the whole mapping

    def __call__(self) -> dict[str, Any]:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory or not Path(directory).is_dir():
            return {}
        found: dict[str, Any] = {}
        for entry in sorted(Path(directory).iterdir()):
            section, sep, key = entry.name.lower().partition("__")
            if not sep or section not in self.settings_cls.model_fields or not entry.is_file():
                continue
            value = entry.read_text("utf-8").rstrip("\r\n")
            found.setdefault(section, {})[key] = value
        return found


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("PROPREADY_CONFIG")
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def load_settings(path: Path) -> Settings:
    """Read, merge and validate the configuration; raise ConfigError with one clear line."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found (pass --config PATH or set PROPREADY_CONFIG)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, path, text)) from None
    settings = _resolve_relative_paths(settings, path.parent)
    if same_database(settings.state.url, settings.source.url):
        # The source is read-only and the state is written all the time: one database for both
        # would make propready write into the PM database.
        raise ConfigError(
            f"{path}: state.url names the same database as source.url; propready's state "
            "needs a database of its own"
        )
    return settings


def _resolve_relative_paths(settings: Settings, base: Path) -> Settings:
    """Relative paths in the file (rules folder, SQLite files) are relative to the file itself."""
    rules = settings.rules
    updates: dict[str, Any] = {}
    if not rules.path.is_absolute():
        updates["path"] = (base / rules.path).resolve()
    if rules.catalog_path is not None and not rules.catalog_path.is_absolute():
        updates["catalog_path"] = (base / rules.catalog_path).resolve()
    return settings.model_copy(
        update={
            "rules": rules.model_copy(update=updates),
            "state": settings.state.model_copy(
                update={"url": _sqlite_relative(settings.state.url, base)}
            ),
            "source": settings.source.model_copy(
                update={"url": _sqlite_relative(settings.source.url, base)}
            ),
        }
    )


def _sqlite_relative(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        tail = url[len(prefix) :]
        path_part, sep, query = tail.partition("?")
        return f"{prefix}{(base / path_part).resolve()}{sep}{query}"
    return url


def _describe_validation_error(exc: ValidationError, path: Path, text: str) -> str:
    messages = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join(loc)
        reason = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            reason = "unknown key"
        elif error["type"] == "missing":
            reason = "required key is missing"
        if not loc:  # a rule across sections: the reason names the keys
            messages.append(f"{path}: {reason}")
            continue
        env_name = ENV_PREFIX + "__".join(part.upper() for part in loc)
        if env_name in {name.upper() for name in os.environ}:
            where = f"environment variable {env_name}"
        else:
            line = _line_of(text, loc)
            where = f"{path}:{line}" if line else str(path)
        messages.append(f"{where}: {key}: {reason}")
    first = messages[0]
    more = len(messages) - 1
    return first + (f" (and {more} more: {'; '.join(messages[1:])})" if more else "")


def _line_of(text: str, loc: list[str]) -> int | None:
    """The line where a key is set, found by scanning tables and keys (tomllib keeps no lines)."""
    if not loc:
        return None
    section, key = (loc[0], loc[1]) if len(loc) > 1 else (None, loc[0])
    in_section = section is None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("["):
            name = line.strip("[] ")
            in_section = section is None or name == section
            if section is not None and name == section and len(loc) == 1:
                return number
            continue
        if in_section and re.match(rf"^{re.escape(key)}\s*=", line):
            return number
    return None


def settings_summary(settings: Settings) -> Mapping[str, Any]:
    """The configuration as shown to people: secrets masked, URLs without passwords."""
    data = settings.model_dump(mode="json")
    data["planomatic"]["api_key"] = "set" if settings.planomatic.api_key.get_secret_value() else ""
    for name in ("token", "previous_token"):
        is_set = getattr(settings.webhooks, name).get_secret_value()
        data["webhooks"][name] = "set" if is_set else ""
    data["writeback"]["url"] = "set" if settings.writeback.enabled else ""
    data["console"]["session_secret"] = (
        "set" if settings.console.session_secret.get_secret_value() else ""
    )
    for section in ("state", "source"):
        data[section]["url"] = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", data[section]["url"])
    return data
