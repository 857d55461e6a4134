"""SpikeLab 0.1.2's public API on this package: the names ``import spikelab`` and
``spikelab.data_loaders`` give, and the keyword arguments of SpikeLab's loaders and exporters
(read from SpikeLab 0.1.2 itself, in its own virtual environment)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from spikelab_reference import reference_json

import spikelab
import spikelab.data_loaders
from spikelab.data_loaders import data_exporters, data_loaders, s3_utils
from spikelab.spikedata import SpikeData

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("h5py", "pynwb", "hdmf", "boto3", "botocore", "pandas", "scipy", "matplotlib")


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_spikelab_is_light_and_exporting_hdf5_from_it_never_imports_pynwb(tmp_path):
    out = _run(
        "import sys\n"
        "import spikelab\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
        "sd = spikelab.SpikeData([[1.0, 2.0]], length=3.0)\n"
        f"spikelab.export_spikedata_to_hdf5(sd, {str(tmp_path / 'x.h5')!r})\n"
        f"back = spikelab.load_spikedata_from_hdf5({str(tmp_path / 'x.h5')!r})\n"
        "assert back.N == 1\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pynwb', 'hdmf')))\n"
    )
    assert out.splitlines() == ["[]", "[]"]


def test_spikelab_exposes_spikedata_the_loaders_and_the_exporters():
    assert spikelab.SpikeData is SpikeData
    for name in (
        "load_spikedata_from_hdf5",
        "load_spikedata_from_nwb",
        "load_spikedata_from_kilosort",
        "load_spikedata_from_pickle",
    ):
        assert getattr(spikelab, name) is getattr(data_loaders, name)
        assert name in spikelab.__all__ and name in dir(spikelab)
    for name in (
        "export_spikedata_to_hdf5",
        "export_spikedata_to_nwb",
        "export_spikedata_to_kilosort",
        "export_to_pickle",
    ):
        assert getattr(spikelab, name) is getattr(data_exporters, name)
        assert name in spikelab.__all__
    with pytest.raises(AttributeError, match="no attribute 'load_spikedata_from_ibl'"):
        spikelab.load_spikedata_from_ibl  # noqa: B018


def test_the_data_loaders_package_gives_its_names_as_spikelab_does():
    for name in spikelab.data_loaders.__all__:
        value = getattr(spikelab.data_loaders, name)
        module = next(m for m in (data_loaders, s3_utils, data_exporters) if hasattr(m, name))
        assert value is getattr(module, name)
    from spikelab.data_loaders import export_to_pickle, load_spikedata_from_hdf5  # noqa: F401

    assert data_loaders.load_from_pickle is data_loaders.load_spikedata_from_pickle


# ------------------------------------------------------------- SpikeLab 0.1.2's signatures
#: Functions of SpikeLab 0.1.2's data_loaders modules that this package implements, by module.
OURS = {
    "data_loaders": (
        "load_spikedata_from_hdf5",
        "load_spikedata_from_kilosort",
        "load_spikedata_from_pickle",
        "load_from_pickle",
    ),
    "data_exporters": (
        "export_spikedata_to_hdf5",
        "export_spikedata_to_nwb",
        "export_spikedata_to_kilosort",
        "export_to_pickle",
    ),
    "s3_utils": (
        "is_s3_url",
        "parse_s3_url",
        "download_from_s3",
        "upload_to_s3",
        "ensure_local_file",
    ),
}
SPIKEDATA_METHODS = ("to_hdf5", "to_nwb", "to_kilosort")


@pytest.fixture(scope="module")
def spikelab_signatures() -> dict:
    code = f"""
        import inspect, json, importlib
        from spikelab.spikedata import SpikeData
        out = {{}}
        for module, names in {OURS!r}.items():
            mod = importlib.import_module("spikelab.data_loaders." + module)
            for name in names:
                params = inspect.signature(getattr(mod, name)).parameters.values()
                out[module + "." + name] = [p.name for p in params]
        for name in {SPIKEDATA_METHODS!r}:
            params = inspect.signature(getattr(SpikeData, name)).parameters.values()
            out["SpikeData." + name] = [p.name for p in params][1:]
        print(json.dumps(out))
    """
    return reference_json(code)


def _ours(key: str):
    owner, name = key.split(".")
    if owner == "SpikeData":
        return getattr(SpikeData, name)
    return getattr(
        {"data_loaders": data_loaders, "data_exporters": data_exporters}.get(owner, s3_utils), name
    )


@pytest.mark.slow
def test_every_argument_spikelab_takes_is_accepted_by_name(spikelab_signatures):
    """A call that names SpikeLab 0.1.2's arguments works here too (**kwargs passed through
    count: SpikeData.to_* forward them to the exporters, s3_utils to boto3's client)."""
    assert set(spikelab_signatures) == {f"{m}.{n}" for m, names in OURS.items() for n in names} | {
        f"SpikeData.{n}" for n in SPIKEDATA_METHODS
    }
    for key, names in spikelab_signatures.items():
        params = inspect.signature(_ours(key)).parameters
        kinds = {p.kind for p in params.values()}
        forwards = inspect.Parameter.VAR_KEYWORD in kinds
        missing = [n for n in names if n not in params and not forwards]
        assert not missing, f"{key}: SpikeLab 0.1.2 takes {missing}, this package does not"
        if key.startswith("SpikeData."):
            exporter = getattr(
                data_exporters,
                {
                    "to_hdf5": "export_spikedata_to_hdf5",
                    "to_nwb": "export_spikedata_to_nwb",
                    "to_kilosort": "export_spikedata_to_kilosort",
                }[key[10:]],
            )
            target = inspect.signature(exporter).parameters
            assert not [n for n in names if n not in params and n not in target], key
