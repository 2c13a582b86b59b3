"""The deployment files shipped inside the package: systemd units, example config, runbook, rules.

The wheel carries `deploy/` as `propready/deploy/` and `rules/` as `propready/example_rules/`
(pyproject.toml); a checkout has them at the top level. `propready deploy-files DIR` copies them
out, so an installation needs nothing but the wheel.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import propready

# Every unit in deploy/ ships, including ones added later; the rest are named.
_DEPLOY_PATTERNS = ("*.service", "*.example.toml", "RUNBOOK.md")


class DeployFilesError(Exception):
    """The files cannot be written; one line naming what and where."""


@dataclass(frozen=True, slots=True)
class ShippedFile:
    source: Path
    target: Path  # relative to the folder written to


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DeployFilesError(
        f"the deployment files are missing from this installation ({candidates[0]})"
    )


def shipped_files() -> list[ShippedFile]:
    """What `deploy-files` writes: from the installed package, else from the checkout."""
    package = Path(propready.__file__).parent
    checkout = package.parent.parent
    deploy = _first_existing(package / "deploy", checkout / "deploy")
    rules = _first_existing(package / "example_rules", checkout / "rules")
    files = sorted({p for pattern in _DEPLOY_PATTERNS for p in deploy.glob(pattern) if p.is_file()})
    found = [ShippedFile(p, Path(p.name)) for p in files]
    found += [ShippedFile(p, Path("rules") / p.name) for p in sorted(rules.glob("*.yaml"))]
    return found


def write_deploy_files(folder: Path, *, force: bool = False) -> list[Path]:
    """Copy the shipped files into `folder`; refuse (writing nothing) to overwrite without force."""
    files = shipped_files()
    if folder.exists() and not folder.is_dir():
        raise DeployFilesError(f"{folder} is a file, not a folder")
    if not force:
        taken = [folder / f.target for f in files if (folder / f.target).exists()]
        if taken:
            more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
            raise DeployFilesError(f"{taken[0]} exists{more}; pass --force to overwrite")
    written = []
    try:
        for item in files:
            target = folder / item.target
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.source, target)
            written.append(target)
    except OSError as exc:
        raise DeployFilesError(f"cannot write into {folder} ({exc.strerror or exc})") from None
    return written
