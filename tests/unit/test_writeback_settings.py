"""`[writeback]`: the URL as a credential, masked in every summary; one-line config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from propready.settings import ConfigError, load_settings, settings_summary

STATEMENT = "UPDATE units SET photos_url = :photo_manage_link WHERE unit_id = :external_property_id"
URL = "postgresql+psycopg://writer:pm-s3cret@pm-db.internal/pm"


def write(tmp_path: Path, writeback: str) -> Path:
    path = tmp_path / "propready.toml"
    path.write_text(
        '[source]\nurl = "sqlite:///pm.db"\nquery = "SELECT 1"\n\n[writeback]\n' + writeback
    )
    return path


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CREDENTIALS_DIRECTORY", "PROPREADY_WRITEBACK__URL"):
        monkeypatch.delenv(name, raising=False)


def test_the_url_comes_from_a_credential_and_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """writeback__url in $CREDENTIALS_DIRECTORY turns write-back on; the summary says "set",
    and the URL and its password are among the values the log redactor masks."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "writeback__url").write_text(URL + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    settings = load_settings(write(tmp_path, f'statement = "{STATEMENT}"\n'))
    assert settings.writeback.enabled
    assert settings.writeback.url.get_secret_value() == URL
    shown = json.dumps(settings_summary(settings))
    assert "pm-s3cret" not in shown
    assert settings_summary(settings)["writeback"]["url"] == "set"
    assert {URL, "pm-s3cret"} <= set(settings.secret_values())


def test_off_by_default() -> None:
    """Without a URL, write-back is off and the statement may stay empty."""
    from propready.settings import Settings

    settings = Settings(source={"url": "sqlite:///pm.db", "query": "SELECT 1"})
    assert not settings.writeback.enabled
    assert settings.writeback.secret_values() == []


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (f'url = "{URL}"\n', "writeback.statement is required when writeback.url is set"),
        (
            f'url = "{URL}"\nstatement = "UPDATE units SET a = :unit"\n',
            "writeback.statement: unknown parameter :unit",
        ),
        (
            f'url = "{URL.replace("postgresql+psycopg", "postgres")}"\nstatement = "{STATEMENT}"\n',
            "writeback.url: 'postgres://' is not a SQLAlchemy URL scheme",
        ),
        (
            f'url = "{URL.replace("postgresql+psycopg", "mysql+pymysql")}"\n'
            f'statement = "{STATEMENT}"\n',
            "writeback.url: the database driver is not installed (pymysql)",
        ),
        (
            'url = "sqlite:////srv/pm.db"\nretry_base_seconds = 600\nretry_max_seconds = 60\n'
            f'statement = "{STATEMENT}"\n',
            "retry_max_seconds must be at least retry_base_seconds",
        ),
    ],
)
def test_mistakes_are_one_line_without_the_password(
    tmp_path: Path, section: str, expected: str
) -> None:
    """Each mistake is one ConfigError line naming the key; the password never appears."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, section))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert "pm-s3cret" not in message
