"""SpikeLab 0.1.2 itself, fetched from the package index at test time (never copied into this
repository): its source distribution (for its own exporter tests) and a separate virtual
environment where ``import spikelab`` is SpikeLab 0.1.2 (the package names clash), so that
its loaders can read the files we write.

Both are cached under ``.cache/spikelab-0.1.2/`` in the repository (git-ignored) and made
once; delete the folder to fetch again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VERSION = "0.1.2"
CACHE = REPO / ".cache" / f"spikelab-{VERSION}"
PYTHON = Path(sys.executable)


def _pip(*args: str, python: Path = PYTHON) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_PROGRESS_BAR": "off"}
    subprocess.run(
        [str(python), "-m", "pip", "-q", *args], check=True, env=env, capture_output=True
    )


def sdist() -> Path:
    """The unpacked source distribution of SpikeLab 0.1.2 (its ``tests/`` included)."""
    root = CACHE / "sdist"
    unpacked = root / f"spikelab-{VERSION}"
    if not (unpacked / "tests" / "test_dataexporters.py").is_file():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _pip(
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"spikelab=={VERSION}",
            "-d",
            str(root),
        )
        (archive,) = root.glob("spikelab-*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    return unpacked


def reference_python() -> Path:
    """The Python of a virtual environment holding SpikeLab 0.1.2 (and pynwb, which its NWB
    loader prefers), apart from ours."""
    venv = CACHE / "venv"
    python = venv / "bin" / "python"
    marker = venv / ".complete"
    if not marker.is_file():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([str(PYTHON), "-m", "venv", str(venv)], check=True)
        _pip("install", f"spikelab=={VERSION}", "pynwb", python=python)
        marker.write_text("ok\n")
    return python


def run_reference(code: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` (a script) with SpikeLab 0.1.2's Python, outside this repository (so that
    ``import spikelab`` is theirs); ``args`` become ``sys.argv[1:]``."""
    python = reference_python()
    workdir = CACHE / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(python), "-c", textwrap.dedent(code), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def reference_json(code: str, *args: str) -> object:
    """``run_reference`` for a script that prints one JSON document; return it."""
    proc = run_reference(code, *args)
    if proc.returncode != 0:
        raise AssertionError(f"SpikeLab {VERSION} script failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout)
