"""Shared fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
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
