"""Shared fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKFLOW_FILES = (
    "Snakefile",
    "rules",
    "scripts",
    "schemas",
    "config.yaml",
    "profiles",
    "envs",
    "report",
)


def copy_workflow(dest: Path, *, example: bool = True) -> Path:
    """Copy the workflow (and the example recordings) into ``dest``; return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    if example:
        shutil.copytree(REPO / "example", dest / "example")
    return dest


@pytest.fixture
def workflow_dir(tmp_path: Path) -> Path:
    """A fresh copy of the workflow with the example data, in a temporary directory."""
    return copy_workflow(tmp_path / "wf")


def run_snakemake(
    workdir: Path,
    *args: str,
    check: bool = False,
    env: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    **popen,
) -> subprocess.CompletedProcess:
    """Run this venv's ``snakemake *args`` in ``workdir``; capture its output.

    ``env`` replaces the environment (default: ours, with this venv's bin first on PATH);
    ``extra_env`` adds to it. With ``check``, a non-zero exit raises with the output.
    """
    environ = (
        dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        if env is None
        else dict(env)
    )
    environ.update(extra_env or {})
    proc = subprocess.run(
        [str(BIN / "snakemake"), *args],
        cwd=workdir,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        **popen,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
