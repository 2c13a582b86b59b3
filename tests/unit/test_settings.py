"""Settings: TOML, environment overrides, systemd credentials, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from propready.settings import ConfigError, load_settings, settings_summary

MINIMAL = """\
[state]
url = "sqlite:///state.db"

[source]
url = "postgresql://pm_reader:hunter2@pm-db/pm"
query = "SELECT unit_code AS external_property_id FROM units"

[planomatic]
requests_per_minute = 50
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CREDENTIALS_DIRECTORY", "PROPREADY_PLANOMATIC__API_KEY"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "propready.toml"
    path.write_text(MINIMAL)
    return path


def test_defaults_and_relative_paths(config: Path) -> None:
    """Unset keys take design.md's defaults; relative SQLite paths are relative to the file."""
    settings = load_settings(config)
    assert settings.orders.mode == "live"
    assert settings.orders.duplicate_window_hours == 72
    assert settings.state.url == f"sqlite:///{config.parent / 'state.db'}"


def test_environment_overrides_the_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PROPREADY_<SECTION>__<KEY> wins over the TOML file."""
    monkeypatch.setenv("PROPREADY_PLANOMATIC__REQUESTS_PER_MINUTE", "80")
    monkeypatch.setenv("PROPREADY_ORDERS__MODE", "dry_run")
    settings = load_settings(config)
    assert settings.planomatic.requests_per_minute == 80
    assert settings.orders.mode == "dry_run"


def test_api_key_from_systemd_credentials(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credential file named planomatic__api_key supplies the key; it never shows in repr."""
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "planomatic__api_key").write_text("s3cret-key-value\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    settings = load_settings(config)
    assert settings.planomatic.api_key.get_secret_value() == "s3cret-key-value"
    assert "s3cret" not in repr(settings)
    assert settings_summary(settings)["planomatic"]["api_key"] == "set"
    assert "hunter2" not in str(settings_summary(settings))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t + "bogus = 1\n", "propready.toml:10: planomatic.bogus: unknown key"),
        (
            lambda t: t.replace("requests_per_minute = 50", "requests_per_minute = 0"),
            "propready.toml:9: planomatic.requests_per_minute: Input should be greater than or equal to 1",
        ),
        (
            lambda t: t + '[orders]\nmode = "sometimes"\n',
            "propready.toml:11: orders.mode: Input should be",
        ),
        (
            lambda t: t.replace("[source]", "[sauce]"),
            "propready.toml: source: required key is missing",
        ),
        (lambda t: t.replace('url = "sqlite', "url = sqlite"), "propready.toml: not valid TOML"),
        (lambda t: t + '[log]\nformat = "xml"\n', "propready.toml:11: log.format"),
        (
            lambda t: t + '[metrics]\nlisten = "9464"\n',
            "propready.toml:11: metrics.listen: must be HOST:PORT",
        ),
    ],
)
def test_bad_config_names_file_line_key_and_reason(config: Path, edit, expected: str) -> None:  # type: ignore[no-untyped-def]
    """Every kind of bad value is one line naming where and why."""
    config.write_text(edit(MINIMAL))
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "\n" not in message
    assert expected in message, message


def test_bad_environment_value_names_the_variable(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad override is blamed on the environment variable, not the file."""
    monkeypatch.setenv("PROPREADY_ORDERS__DUPLICATE_WINDOW_HOURS", "soon")
    with pytest.raises(
        ConfigError, match="environment variable PROPREADY_ORDERS__DUPLICATE_WINDOW_HOURS"
    ):
        load_settings(config)


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    """A missing config file mentions --config and PROPREADY_CONFIG."""
    with pytest.raises(ConfigError, match="--config PATH or set PROPREADY_CONFIG"):
        load_settings(tmp_path / "nope.toml")


def test_secret_columns_default_to_the_access_fields(config: Path) -> None:
    """`[source] secret_columns` defaults to access_code and lockbox_location."""
    assert load_settings(config).source.secret_columns == ("access_code", "lockbox_location")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('["access code"]', "'access code' is not a column name"),
        ('["external_property_id"]', "it cannot be secret"),
        ('["a", "a"]', "lists a column twice"),
    ],
)
def test_secret_columns_are_validated(config: Path, value: str, reason: str) -> None:
    """Names must be plain column names, unique, and not the property id."""
    config.write_text(MINIMAL.replace("[planomatic]", f"secret_columns = {value}\n[planomatic]"))
    with pytest.raises(ConfigError, match=r"source\.secret_columns") as caught:
        load_settings(config)
    assert reason in str(caught.value)


def test_database_passwords_are_secret_values(config: Path) -> None:
    """The source and state URL passwords join the values the redactor masks."""
    config.write_text(MINIMAL.replace("sqlite:///state.db", "postgresql://app:st4te-pw@db/state"))
    values = load_settings(config).secret_values()
    assert "hunter2" in values
    assert "st4te-pw" in values


@pytest.mark.parametrize(
    ("listen", "beyond"),
    [
        ("127.0.0.1:9464", False),
        ("[::1]:9464", False),
        ("localhost:9464", False),
        ("127.0.0.5:9464", False),
        ("", False),
        ("0.0.0.0:9464", True),
        ("10.1.2.3:9464", True),
        ("[::]:9464", True),
        ("metrics.internal:9464", True),
    ],
)
def test_metrics_beyond_loopback(config: Path, listen: str, beyond: bool) -> None:
    """Any address other than a loopback one counts as reachable from other hosts."""
    config.write_text(MINIMAL + f'[metrics]\nlisten = "{listen}"\n')
    assert load_settings(config).metrics.beyond_loopback is beyond


@pytest.mark.parametrize(
    ("base_url", "accepted"),
    [("https://api.planomatic.com", True), ("http://127.0.0.1:8080", True),
     ("http://localhost:8080", True), ("http://[::1]:8080", True),
     ("http://api.planomatic.com", False), ("http://10.0.0.5:8080", False)],
)  # fmt: skip
def test_https_is_required_beyond_loopback(config: Path, base_url: str, accepted: bool) -> None:
    """The key travels in the body: plain http is refused at load except for a local sandbox."""
    config.write_text(MINIMAL + f'base_url = "{base_url}"\n')
    if accepted:
        assert load_settings(config).planomatic.base_url == base_url
        return
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert f"{config}:10: planomatic.base_url: https is required" in str(caught.value)


@pytest.mark.parametrize(
    ("state", "source"),
    [("sqlite:///pm.db", "sqlite:///pm.db"),
     ("sqlite:///./sub/../pm.db", "sqlite:///pm.db"),
     ("postgresql+psycopg://propready@db:5432/pm", "postgresql://pm_reader:pw@db/pm")],
)  # fmt: skip
def test_a_state_url_equal_to_the_source_url_is_refused(
    config: Path, state: str, source: str
) -> None:
    """One database for both would make propready write into the PM database: refused."""
    config.write_text(f'[state]\nurl = "{state}"\n[source]\nurl = "{source}"\nquery = "SELECT 1"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert str(caught.value) == (
        f"{config}: state.url names the same database as source.url; propready's state needs a "
        "database of its own"
    )


def test_another_database_on_the_same_server_is_fine(config: Path) -> None:
    """Same PostgreSQL server, another database: accepted."""
    config.write_text(
        '[state]\nurl = "postgresql+psycopg://propready@db/propready"\n'
        '[source]\nurl = "postgresql+psycopg://pm_reader@db/pm"\nquery = "SELECT 1"\n'
    )
    assert load_settings(config).state.url.endswith("/propready")
