"""[webhooks] settings: off by default, a token required to listen, credentials, rotation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from propready.settings import ConfigError, load_settings, settings_summary

BASE = """\
[state]
url = "sqlite:///state.db"

[source]
url = "sqlite:///pm.db"
query = "SELECT unit_code AS external_property_id FROM units"
"""
TOKEN = "tok-0123456789abcdefghijklmnop"
OLD_TOKEN = "old-0123456789abcdefghijklmnop"


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    for name in (
        "CREDENTIALS_DIRECTORY",
        "PROPREADY_WEBHOOKS__TOKEN",
        "PROPREADY_WEBHOOKS__LISTEN",
    ):
        monkeypatch.delenv(name, raising=False)

    def write_config(webhooks: str = "") -> Path:
        path = tmp_path / "propready.toml"
        path.write_text(BASE + ("\n[webhooks]\n" + webhooks if webhooks else ""))
        return path

    return write_config


def test_the_receiver_is_off_by_default(write: Callable[..., Path]) -> None:
    """No [webhooks] section: listen is empty and no token is needed."""
    settings = load_settings(write())
    assert settings.webhooks.listen == ""
    assert settings.webhooks.valid_tokens() == []


def test_listening_needs_a_token(write: Callable[..., Path]) -> None:
    """listen without a token is refused with one line naming webhooks.token."""
    with pytest.raises(ConfigError, match=r"webhooks\.token is required"):
        load_settings(write('listen = "127.0.0.1:8710"\n'))


@pytest.mark.parametrize("token", ["short", "has spaces in it 0123456789abcdef", "a/b" * 10])
def test_a_token_must_be_long_and_url_safe(write: Callable[..., Path], token: str) -> None:
    """A token goes into a URL path: 24+ URL-safe characters; the message never echoes it."""
    with pytest.raises(ConfigError) as refused:
        load_settings(write(f'listen = "127.0.0.1:8710"\ntoken = "{token}"\n'))
    assert "webhooks.token" in str(refused.value)
    assert token not in str(refused.value)


def test_a_bad_listen_address_is_refused(write: Callable[..., Path]) -> None:
    """listen must be HOST:PORT."""
    with pytest.raises(ConfigError, match=r"webhooks\.listen"):
        load_settings(write(f'listen = "8710"\ntoken = "{TOKEN}"\n'))


def test_tokens_from_credentials_and_rotation(
    write: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """webhooks__token and webhooks__previous_token credentials are both valid, and secret."""
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "webhooks__token").write_text(TOKEN + "\n")
    (credentials / "webhooks__previous_token").write_text(OLD_TOKEN)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    settings = load_settings(write('listen = "127.0.0.1:8710"\n'))
    assert settings.webhooks.valid_tokens() == [TOKEN, OLD_TOKEN]
    assert TOKEN in settings.secret_values()
    assert OLD_TOKEN in settings.secret_values()
    assert TOKEN not in repr(settings)
    summary = settings_summary(settings)
    assert summary["webhooks"] == {
        "listen": "127.0.0.1:8710",
        "token": "set",
        "previous_token": "set",
    }
