"""`[notify]` settings and channels: where URLs come from, what is checked, what is masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from propready.adapters.notify_channels import parse_channel
from propready.settings import ConfigError, load_settings, settings_summary

BASE = """\
[source]
url = "sqlite:///pm.db"
query = "SELECT 1 AS external_property_id"
"""
SLACK = "slack://T01ABCDEF/B02GHIJKL/abcdefghijklmnopqrstuvwx/#ops"
MAIL = "mailtos://ops-bot:APP-PASSWORD@example.com?to=ops@example.com"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CREDENTIALS_DIRECTORY", "PROPREADY_NOTIFY__URLS"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "propready.toml"
    path.write_text(BASE)
    return path


def test_urls_come_from_a_credential_file_one_per_line(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`notify__urls` holds one URL a line; the summary shows them masked; the redactor gets
    the URLs and their secret parts."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "notify__urls").write_text(f"{SLACK}\n\n{MAIL}\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    settings = load_settings(config)
    assert settings.notify.channel_urls() == [SLACK, MAIL]
    assert "APP-PASSWORD" not in repr(settings_summary(settings))
    secrets = settings.secret_values()
    assert {"APP-PASSWORD", "abcdefghijklmnopqrstuvwx", SLACK, MAIL} <= set(secrets)


@pytest.mark.parametrize("value", [f'["{SLACK}", "{MAIL}"]', f"{SLACK}\n{MAIL}"])
def test_the_environment_takes_a_json_array_or_lines(
    config: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """PROPREADY_NOTIFY__URLS may be a JSON array or one URL a line."""
    monkeypatch.setenv("PROPREADY_NOTIFY__URLS", value)
    assert load_settings(config).notify.channel_urls() == [SLACK, MAIL]


@pytest.mark.parametrize(
    ("notify", "message"),
    [
        ('urls = ["json://127.0.0.1/x", "mailto://bob:pw-9931@"]', "entry 2 (scheme mailto)"),
        ('urls = ["msteams://a/b/c"]', "entry 1 (scheme msteams) is not a URL apprise can use"),
        ('urls = ["json://127.0.0.1/x"]\nroutes = { unknown = [2] }', "2 is not a position"),
        ("routes = { nonsense = [1] }", "unknown kind 'nonsense'"),
        ('events = ["unknown", "typo"]', "notify.events.1"),
        ('digest_at = "8am"', "'8am' is not a time of day"),
        ("overdue_after_hours = { stuk = 1 }", "unknown kind 'stuk'"),
    ],
)
def test_bad_notify_settings_are_one_line_errors(config: Path, notify: str, message: str) -> None:
    """Each mistake is refused at load with one line naming the key, never a URL's secret."""
    config.write_text(BASE + "[notify]\n" + notify + "\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    text = str(raised.value)
    assert "\n" not in text
    assert message in text
    assert "pw-9931" not in text


def test_routes_send_a_kind_to_some_positions_and_extra_urls() -> None:
    """A routed kind goes to its positions and URLs; other kinds to every url."""
    from propready.notify_settings import NotifySettings

    settings = NotifySettings(urls=[SLACK, MAIL], routes={"quarantined": [2, "json://127.0.0.1/q"]})
    assert settings.urls_for("quarantined") == [MAIL, "json://127.0.0.1/q"]
    assert settings.urls_for("unknown") == [SLACK, MAIL]
    assert settings.channel_urls() == [SLACK, MAIL, "json://127.0.0.1/q"]


def test_a_channel_label_hides_passwords_tokens_and_header_values() -> None:
    """Labels keep the scheme, host and short path; secrets are listed for the redactor."""
    slack = parse_channel(SLACK)
    mail = parse_channel(MAIL)
    webhook = parse_channel("json://127.0.0.1:8080/hook?+X-Token=s3cr3t-value")
    assert slack is not None
    assert mail is not None
    assert webhook is not None
    assert slack.label == "slack://T...F/B...L/a...x/%23ops"
    assert mail.label == "mailtos://ops-bot:****@example.com/ops%40example.com"
    assert webhook.label == "json://127.0.0.1:8080/hook"
    assert "s3cr3t-value" in webhook.secrets
    assert webhook.scrub("POST json://127.0.0.1:8080/hook?+X-Token=s3cr3t-value failed") == (
        "POST json://127.0.0.1:8080/hook failed"
    )
    assert parse_channel("json://") is None
