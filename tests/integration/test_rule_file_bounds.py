"""Hostile rule files are refused quickly and cheaply, by `rules check` and by the hot reload.

Each `rules check` runs in a child process under a 1 GB address-space limit and a timeout, and
reports its own peak memory (a fresh wrapper process, so RUSAGE_CHILDREN is that one child's).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from propready.adapters.store.schema import audit_log
from propready.service.rules_reload import RuleReloader
from propready.settings import Settings
from tests.integration.cycle_support import QUERY, REPO, Clock, PmDatabase, home, wired

# Nine levels of ten: about 10**9 strings once the aliases are expanded.
BILLION_LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{chr(98 + n)}: &{chr(98 + n)} [{','.join(['*' + chr(97 + n)] * 10)}]"
            for n in range(8)
        ),
        "triggers:",
        "  t: property.status == 'x'",
    ]
)
DEEP_NESTING = "triggers: " + "[" * 100_000 + "]" * 100_000 + "\n"

# Run `propready rules check FILE` in a child limited to 1 GB; print seconds and peak RSS (KB).
MEASURE = """
import json, resource, subprocess, sys, time
def limit():
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
start = time.monotonic()
try:
    done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=20,
                          preexec_fn=limit)
    code, out = done.returncode, done.stdout + done.stderr
except subprocess.TimeoutExpired:
    code, out = None, "timed out"
seconds = time.monotonic() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": code, "out": out, "seconds": seconds, "peak_kb": peak}))
"""


@contextmanager
def memory_capped(extra_bytes: int) -> Iterator[None]:
    """Cap this process's address space at its current size plus `extra_bytes` for a while."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        current = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (current + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# In a child limited to 1 GB, with propready already imported (the interpreter's start-up is
# not the refusal's cost): time loading the rule files, report the process's peak RSS (KB).
LOAD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from pathlib import Path
from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import RuleFileError, load_rule_set
catalog = load_catalog()
start = time.monotonic()
try:
    load_rule_set(Path(sys.argv[1]), catalog)
    problems = []
except RuleFileError as exc:
    problems = [str(p) for p in exc.problems]
seconds = time.monotonic() - start
# VmHWM is this process's own peak: ru_maxrss would carry over the parent's high-water mark,
# which Linux records at exec when the child was started by vfork from a large pytest process.
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"problems": problems, "seconds": seconds, "peak_kb": peak}))
"""


def load_in_child(target: Path) -> dict[str, object]:
    """Problems, seconds and peak RSS of loading the rule files at `target` in a fresh process."""
    child = subprocess.run(
        [sys.executable, "-c", LOAD, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    result: dict[str, object] = json.loads(child.stdout)
    return result


def rules_check(target: Path) -> dict[str, object]:
    """Exit code, output, wall seconds and peak RSS of `propready rules check PATH`."""
    path = str(target)
    env = {**os.environ, "PROPREADY_CONFIG": "/nonexistent"}
    wrapper = subprocess.run(
        [sys.executable, "-c", MEASURE, sys.executable, "-m", "propready", "rules", "check", path],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(wrapper.stdout)
    return result


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (BILLION_LAUGHS, 2, "YAML aliases (*a) are not allowed in rule files"),
        (DEEP_NESTING, 1, "nested more than 20 levels deep"),
    ],
    ids=["billion_laughs", "deep_nesting"],
)
def test_hostile_yaml_is_refused_in_under_2_s_and_200_mb(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    """A billion-laughs file and a 100,000-deep file: `rules check` says file:line: reason; the
    refusal takes under 2 s and the process stays under 200 MB (the CLI too)."""
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    result = rules_check(path)
    assert result["code"] == 1, result
    assert f"{path}:{line}: not valid YAML: {reason}" in str(result["out"]), result["out"]
    assert "Traceback" not in str(result["out"])
    assert int(result["peak_kb"]) < 200 * 1024, result  # type: ignore[call-overload]
    loaded = load_in_child(path)
    (problem,) = loaded["problems"]  # type: ignore[misc]
    assert str(problem).startswith(f"{path}:{line}: not valid YAML: {reason}")
    assert float(loaded["seconds"]) < 2.0, loaded  # type: ignore[arg-type]
    assert int(loaded["peak_kb"]) < 200 * 1024, loaded  # type: ignore[call-overload]


@pytest.mark.parametrize("kind", ["device", "symlink_to_device", "fifo", "fifo_in_folder"])
def test_special_files_are_refused_without_reading_them(tmp_path: Path, kind: str) -> None:
    """/dev/zero, a symlink to it and a FIFO are refused as not regular files, at once."""
    target: Path
    if kind == "device":
        target = Path("/dev/zero")
    elif kind == "symlink_to_device":
        target = tmp_path / "zero.yaml"
        target.symlink_to("/dev/zero")
    else:
        folder = tmp_path / "rules"
        folder.mkdir()
        fifo = folder / "pipe.yaml"
        os.mkfifo(fifo)
        target = fifo if kind == "fifo" else folder
    result = rules_check(target)
    assert result["code"] == 1, result
    assert "not a regular file (a device, FIFO or socket); refused" in str(result["out"])
    assert float(result["seconds"]) < 5.0, result  # type: ignore[arg-type]


def test_an_oversized_rule_file_is_refused(tmp_path: Path) -> None:
    """A file over 512 KiB is refused by size before it is parsed."""
    path = tmp_path / "big.yaml"
    path.write_text("triggers:\n  t: property.status == 'x'\n" + "# padding\n" * 60_000)
    result = rules_check(path)
    assert result["code"] == 1
    assert f"{path}: larger than 524,288 bytes" in str(result["out"])


def test_a_costly_cel_expression_is_refused_with_file_and_line(tmp_path: Path) -> None:
    """The 6-deep `.map` over 10-element lists (seconds per evaluation) is refused at load."""
    expression = "a+b+c+d+e+f"
    for name in reversed("abcdef"):
        expression = f"[0,1,2,3,4,5,6,7,8,9].map({name}, {expression})"
    expression = f"size({expression})>0"
    assert 190 <= len(expression) <= 200
    path = tmp_path / "costly.yaml"
    path.write_text(f"triggers:\n  ok: property.status == 'x'\n  costly: {expression}\n")
    result = rules_check(path)
    assert result["code"] == 1
    assert (
        f"{path}:3: trigger 'costly': too costly: comprehension macros nested or chained 6 deep"
        in str(result["out"])
    )
    assert float(result["seconds"]) < 5.0, result  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "hostile", [BILLION_LAUGHS, DEEP_NESTING], ids=["billion_laughs", "deep_nesting"]
)
def test_the_hot_reload_refuses_hostile_files_and_keeps_the_rules(
    state_url: str, tmp_path: Path, hostile: str
) -> None:
    """On reload a hostile file is refused in under 2 s, audited, and the running rules kept."""
    rules_dir = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules_dir)
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1"))
    settings = Settings(
        state={"url": state_url},
        source={"url": pm.url, "query": QUERY},
        rules={"path": rules_dir},
        orders={"mode": "dry_run"},
    )
    try:
        with wired(settings) as parts:
            reloader = RuleReloader(parts, Clock())
            running = parts.rules
            (rules_dir / "zz_hostile.yaml").write_text(hostile)
            started = time.monotonic()
            with memory_capped(512 << 20):  # an unbounded expansion fails here, not the host
                assert reloader.reload("SIGHUP") is False
            elapsed = time.monotonic() - started
            assert parts.rules is running
            with parts.state.connect() as connection:
                refused = connection.execute(
                    sa.select(audit_log.c.detail).where(audit_log.c.kind == "rules_reload_refused")
                ).scalar_one()
    finally:
        pm.close()
    assert elapsed < 2.0
    assert refused["kept_version"] == running.version
    assert "zz_hostile.yaml" in refused["problems"][0]
