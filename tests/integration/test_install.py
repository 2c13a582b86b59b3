"""`make dist` builds a wheel and an sdist that carry everything an installation needs, and the
runbook's install steps work from that wheel in a fresh virtual environment, outside the checkout.

The fresh environment gets propready from the wheel only; its dependencies come from the
project's own environment through a .pth file (no network, seconds instead of a PyPI download),
and `pip check` proves the wheel's declared requirements are met by them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cycle_support import QUERY, REPO, PmDatabase, home

pytestmark = pytest.mark.slow


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel and sdist, built the way `make dist` builds them."""
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, REPO, cwd=REPO)
    return out


def _shipped_deploy_files() -> list[str]:
    return sorted(p.name for p in (REPO / "deploy").iterdir() if p.is_file())


def test_the_wheel_carries_migrations_units_config_runbook_and_rules(dist: Path) -> None:
    """Every file of deploy/ (units added later too), the migrations and the rules are inside."""
    (wheel,) = dist.glob("propready-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "propready/migrations/env.py" in names
    migrations = sorted(p.name for p in (REPO / "migrations" / "versions").glob("*.py"))
    assert {f"propready/migrations/versions/{m}" for m in migrations} <= names
    assert {f"propready/deploy/{f}" for f in _shipped_deploy_files()} <= names
    assert any(n.startswith("propready/deploy/") and n.endswith(".service") for n in names)
    assert "propready/deploy/RUNBOOK.md" in names
    assert "propready/deploy/propready.example.toml" in names
    assert "propready/example_rules/readiness.yaml" in names
    assert "propready/data/catalog.yaml" in names


def test_the_sdist_carries_the_same_and_the_tests(dist: Path) -> None:
    """The sdist has the sources, deploy/, migrations/, rules/, the tests and the Makefile."""
    (sdist,) = dist.glob("propready-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    assert {f"deploy/{f}" for f in _shipped_deploy_files()} <= names
    assert {"migrations/env.py", "rules/readiness.yaml", "Makefile", "README.md"} <= names
    assert "daemon/propready/cli/main.py" in names
    assert "tests/integration/test_install.py" in names


@pytest.fixture(scope="module")
def fresh(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with propready installed from the wheel (bin/ is returned)."""
    venv = tmp_path_factory.mktemp("venv") / "propready"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    python = venv / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv)
    (Path(site.strip()) / "propready-test-deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    (wheel,) = dist.glob("propready-*.whl")
    pip = (sys.executable, "-m", "pip", "--python", python)
    _run(*pip, "install", "-q", "--no-index", "--no-deps", "--ignore-installed", wheel, cwd=venv)
    _run(*pip, "check", cwd=venv)
    return venv / "bin"


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH, no PROPREADY_* from the developer's shell: only what the runbook sets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPREADY_", "PYTHON"))}
    env["PATH"] = "/usr/bin:/bin"
    return env


@pytest.fixture
def sandbox_url(fresh: Path, tmp_path: Path) -> Iterator[str]:
    """`propready sandbox` from the installed wheel."""
    url_file = tmp_path / "sandbox.url"
    process = subprocess.Popen(
        [fresh / "propready", "sandbox", "--port", "0", "--url-file", url_file],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env=_clean_env(),
    )
    deadline = time.monotonic() + 30
    while not (url_file.exists() and url_file.read_text()):
        assert time.monotonic() < deadline, "the installed sandbox did not start"
        assert process.poll() is None, "the installed sandbox exited"
        time.sleep(0.05)
    yield url_file.read_text().strip()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


def _edited_example(example: str, values: dict[str, str]) -> str:
    """The example config with some keys set, as an operator edits it (one `key = ...` each)."""
    text = re.sub(r'query = """.*?"""', f"query = {values.pop('query')!r}", example, flags=re.S)
    for dotted, value in values.items():
        section, key = dotted.split(".")
        pattern = rf"(\[{section}\][^\[]*?)^{key} = [^\n]*$"
        text, count = re.subn(pattern, rf"\g<1>{key} = {value}", text, count=1, flags=re.S | re.M)
        assert count == 1, f"the example config has no {dotted}"
    return text


def test_the_runbooks_install_steps_work_from_the_wheel(
    fresh: Path, tmp_path: Path, sandbox_url: str
) -> None:
    """deploy-files, the example config edited, rules check, db upgrade on SQLite, check against
    the sandbox and run --once all work from the installed wheel, away from the checkout."""
    propready = fresh / "propready"
    imported = _run(
        fresh / "python", "-c", "import propready; print(propready.__file__)", cwd=tmp_path
    )
    assert imported.startswith(str(fresh.parent)), imported
    etc = tmp_path / "etc"
    listed = _run(propready, "deploy-files", etc, cwd=tmp_path, env=_clean_env()).split()
    assert sorted(Path(p).name for p in listed) == sorted(
        [*_shipped_deploy_files(), "readiness.yaml"]
    )
    assert (etc / "propready.service").read_text() == (
        REPO / "deploy" / "propready.service"
    ).read_text()

    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1", status="Vacant Unrented Ready"), home("H2"))
    pm.close()
    config = etc / "propready.toml"
    config.write_text(
        _edited_example(
            (etc / "propready.example.toml").read_text(),
            {
                "query": QUERY,
                "state.url": f'"sqlite:///{tmp_path / "var" / "state.db"}"',
                "source.url": f'"sqlite:///{tmp_path / "pm.db"}"',
                "source.timezone": '"America/Denver"',
                "rules.path": f'"{etc / "rules"}"',
                "orders.mode": '"dry_run"',
                "planomatic.base_url": f'"{sandbox_url}"',
                "metrics.listen": '""',
            },
        )
    )
    assert tomllib.loads(config.read_text())["orders"]["mode"] == "dry_run"
    env = {**_clean_env(), "PROPREADY_CONFIG": str(config), "PROPREADY_PLANOMATIC__API_KEY": "sandbox-key"}  # fmt: skip
    assert _run(propready, "rules", "check", cwd=tmp_path, env=env).startswith("OK: 2 triggers")
    assert "upgraded from empty" in _run(propready, "db", "upgrade", cwd=tmp_path, env=env)
    check = _run(propready, "check", cwd=tmp_path, env=env)
    assert "FAIL" not in check
    assert "PASS orders: 1 home(s) ready now would be ordered" in check
    assert f"PASS vendor: {sandbox_url} answers like the API" in check
    _run(propready, "run", "--once", cwd=tmp_path, env=env)
    audit = _run(propready, "audit", "--format", "csv", cwd=tmp_path, env=env)
    assert audit.startswith("id,at,kind")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_units_written_by_deploy_files_pass_systemd_analyze_verify(
    fresh: Path, tmp_path: Path
) -> None:
    """Every unit deploy-files writes parses without a warning (the binary path stands in)."""
    _run(fresh / "propready", "deploy-files", tmp_path, cwd=tmp_path, env=_clean_env())
    units = sorted(tmp_path.glob("*.service"))
    assert units
    for unit in units:
        text = unit.read_text()
        assert "/opt/propready/bin/propready" in text
        unit.write_text(text.replace("/opt/propready/bin/propready", "/bin/true"))
        result = subprocess.run(
            ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
        )
        assert (result.returncode, result.stdout + result.stderr) == (0, "")
