"""Configuration: one TOML file, environment overrides, systemd credentials; typed and frozen.

Precedence, highest first: environment variables `PROPREADY_<SECTION>__<KEY>`, systemd
credentials (files in `$CREDENTIALS_DIRECTORY` named `<section>__<key>`, e.g.
`planomatic__api_key`), then the TOML file. pydantic-settings does the environment parsing and the
deep merge; this module adds the TOML file, the credentials source and error messages that name
the file, line, key and reason (`ConfigError`), which the CLI prints as one line and exit code 2.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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

from propready.notify_settings import NotifySettings

DEFAULT_CONFIG_PATH = Path("/etc/propready/propready.toml")
ENV_PREFIX = "PROPREADY_"


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
    timezone: str = "UTC"
    batch_size: int = Field(default=5000, ge=1, le=1_000_000)
    # Column kinds where the name does not say it: {"dtmoveout" = "date", "ibeds" = "integer"}.
    types: dict[str, Literal["date", "timestamp", "number", "integer", "boolean", "text"]] = Field(
        default_factory=dict
    )

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


class PlanomaticSettings(_Section):
    base_url: str = "https://api.planomatic.com"
    api_key: SecretStr = SecretStr("")
    requests_per_minute: int = Field(default=50, ge=1, le=6000)
    timeout_seconds: float = Field(default=30, gt=0, le=600)
    vendor_duplicate_protection_hours: float = Field(default=0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must start with https:// (or http:// for a local sandbox)")
        if "api_key" in value:
            raise ValueError("must not carry the api key; set planomatic.api_key instead")
        return value.rstrip("/")


class MetricsSettings(_Section):
    listen: str = "127.0.0.1:9464"  # "" turns the endpoint off

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value == "":
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, for example 127.0.0.1:9464")
        return value


class DaemonSettings(_Section):
    """How `propready run` schedules its jobs, shares work with other hosts, and stops."""

    # Names this host in order leases and logs; hosts sharing a PostgreSQL state database need
    # distinct names. Empty: the host name.
    instance_name: str = Field(default="", max_length=100, pattern=r"^[A-Za-z0-9_.@-]*$")
    send_interval_seconds: float = Field(default=10, gt=0, le=3600)
    recovery_interval_seconds: float = Field(default=60, gt=0, le=86400)
    status_sync_interval_seconds: float = Field(default=900, gt=0, le=86400)
    # An order being sent is leased this long; another host takes it over once it expires.
    lease_seconds: float = Field(default=300, ge=5, le=86400)
    stop_timeout_seconds: float = Field(default=45, gt=0, le=3600)
    # The systemd watchdog is fed only while some job has finished within this many seconds.
    watchdog_stall_seconds: float = Field(default=600, ge=1, le=86400)


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
    notify: NotifySettings = NotifySettings()

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
        """Secret strings the log redactor must mask wherever they appear."""
        key = self.planomatic.api_key.get_secret_value()
        return ([key] if key else []) + self.notify.secret_values()


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
    return _resolve_relative_paths(settings, path.parent)


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
        reason = error["msg"]
        if error["type"] == "extra_forbidden":
            reason = "unknown key"
        elif error["type"] == "missing":
            reason = "required key is missing"
        if not loc:  # a rule across sections: the reason names the keys
            messages.append(f"{path}: {reason.removeprefix('Value error, ')}")
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
    for section in ("state", "source"):
        data[section]["url"] = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", data[section]["url"])
    return data
