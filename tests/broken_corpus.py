"""A corpus of hostile, broken and awkward-but-valid SpikeData pickles, shared by the library
tests (tests/test_broken_inputs.py) and the workflow tests (tests/test_workflow_broken.py).

Each :class:`Case` is one input file. ``load`` is what the restricted loader must say about it
(a fragment of the error, or None when the file is a valid SpikeData); ``export`` maps the
workflow targets that must fail for an otherwise loadable recording to a fragment of their
error (the workflow runs with no default sampling rate, so a recording must carry its own).
Hostile pickles try to create a file in the sentinel folder (or, for ``importlib``, import a
module that would), so its absence proves nothing ran.
"""

from __future__ import annotations

import os
import pickle
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikelab.spikedata import SpikeData

FS = 20000.0
EVIL_MODULE = "spikelab_evil_module"  # written into the sentinel folder by write_evil_module


@dataclass(frozen=True)
class Case:
    """One corpus file: how to build it, and what loading / KiloSort export must report."""

    name: str
    build: Callable[[Path], bytes]  # sentinel folder -> file contents
    load: str | None = None  # fragment of the loader's error; None = loads fine
    export: dict[str, str] = field(default_factory=dict)  # target -> fragment of its error
    unsafe: str | None = None  # the forbidden global named by UnsafePickleError

    @property
    def valid(self) -> bool:
        return self.load is None and not self.export


class _Reduce:
    """Pickles as ``func(*args)``: what a hostile pickle asks the loader to call."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _state(sd: SpikeData, **changes) -> bytes:
    """Pickle of a SpikeData whose state was altered after validation (as a foreign writer
    could produce)."""
    sd.__dict__.update(changes)
    return pickle.dumps(sd, protocol=4)


def good(seed: int = 0, **kwargs) -> SpikeData:
    rng = np.random.default_rng(seed)
    train = [np.sort(rng.uniform(0, 1000.0, n)) for n in (50, 0, 7)]
    attrs = [{"electrode": i, "cluster_id": 10 + i} for i in range(3)]
    kw = dict(length=1000.0, neuron_attributes=attrs, metadata={"fs_Hz": FS})
    kw.update(kwargs)
    return SpikeData(train, **kw)


def _dump(sd: SpikeData) -> bytes:
    return pickle.dumps(sd, protocol=pickle.HIGHEST_PROTOCOL)


def write_evil_module(folder: Path) -> None:
    """A module that creates a sentinel file when imported (for the importlib payload)."""
    sentinel = folder / "PWNED-importlib"
    (folder / f"{EVIL_MODULE}.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n")


def _hostile(func, args_for: Callable[[Path], tuple], protocol=4) -> Callable[[Path], bytes]:
    return lambda s: pickle.dumps(_Reduce(func, args_for(s)), protocol=protocol)


def _text_pickle(code: str) -> Callable[[Path], bytes]:
    """A hand-written protocol-0 pickle (``{s}`` is the sentinel folder)."""
    return lambda s: code.replace("{s}", str(s)).encode()


def _spikedata_with(**extra) -> Callable[[Path], bytes]:
    def build(s: Path) -> bytes:
        values = {
            k: v(s) if callable(v) and not isinstance(v, type) else v for k, v in extra.items()
        }
        return _state(good(), **values)

    return build


def _ten_million_spikes(_s: Path) -> bytes:
    times = np.linspace(0.0, 600_000.0, 10_000_000)  # one unit, 10 min, ~16.7 kHz
    sd = SpikeData([times, [1.0, 2.0]], length=600_000.0, metadata={"fs_Hz": FS})
    return _dump(sd)


_NO_FS = {"kilosort": "the kilosort export needs a sampling rate, and none is known"}


def _bad_fs(value: str) -> dict[str, str]:
    """Targets that use the recording's own (unusable) metadata fs_Hz fail naming it."""
    return {
        "kilosort": "its metadata has no usable 'fs_Hz'",
        "nwb": f'metadata["fs_Hz"] must be a finite sampling rate > 0 Hz, got {value}',
    }


def _nan_train(s):
    return [np.array([1.0, np.nan, 3.0])]


CASES: tuple[Case, ...] = (
    # ------------------------------------------------------------------- valid edge cases
    Case("good_a", lambda s: _dump(good(1))),
    Case("good_b", lambda s: _dump(good(2, start_time=-250.0, length=1250.0))),
    Case("zero_units", lambda s: _dump(SpikeData([], length=100.0, metadata={"fs_Hz": FS}))),
    Case("zero_length", lambda s: _dump(SpikeData([[], []], length=0.0, metadata={"fs_Hz": FS}))),
    Case(
        "zero_length_spike_at_start",
        lambda s: _dump(
            SpikeData([[5.0, 5.0]], start_time=5.0, length=0.0, metadata={"fs_Hz": FS})
        ),
    ),
    Case("ten_million_spikes", _ten_million_spikes),
    # ------------------------------------------------------------------ not a pickle at all
    Case("empty_file", lambda s: b"", load="the file is empty (0 bytes)"),
    Case("truncated", lambda s: _dump(good())[:300], load="truncated or corrupt"),
    Case(
        "random_bytes",
        lambda s: np.random.default_rng(1).bytes(4096),
        load="not a readable pickle",
    ),
    Case("text_file", lambda s: b"recording,spike\n1,2\n", load="not a readable pickle"),
    # ------------------------------------------------------------- a pickle of something else
    Case("a_dict", lambda s: pickle.dumps({"train": [[1.0]]}), load="holds a builtins.dict"),
    Case("a_list", lambda s: pickle.dumps([[1.0, 2.0]]), load="holds a builtins.list"),
    Case("an_ndarray", lambda s: pickle.dumps(np.arange(5.0)), load="holds a numpy.ndarray"),
    Case(
        "another_allowed_class",
        lambda s: pickle.dumps(__import__("datetime").date(2024, 1, 1)),
        load="holds a datetime.date, not a SpikeData",
    ),
    Case(
        "another_class",
        lambda s: pickle.dumps(__import__("collections").Counter(a=1)),
        load="'collections.Counter'",
        unsafe="collections.Counter",
    ),
    # ---------------------------------------------------------------- inconsistent SpikeData
    Case("nan_spike_time", _spikedata_with(train=_nan_train), load="spike time nan is not finite"),
    Case(
        "inf_spike_time",
        _spikedata_with(train=[np.array([1.0, np.inf])], N=1, neuron_attributes=None),
        load="spike time inf is not finite",
    ),
    Case(
        "unsorted_train",
        _spikedata_with(train=[np.array([3.0, 1.0, 2.0])], N=1, neuron_attributes=None),
        load="spike times are not sorted",
    ),
    Case(
        "spike_after_end",
        _spikedata_with(train=[np.array([1.0, 1500.0])], N=1, neuron_attributes=None),
        load="spike time 1500.0 ms lies outside the recording [0.0, 1000.0] ms",
    ),
    Case(
        "spike_before_start",
        _spikedata_with(train=[np.array([-5.0, 1.0])], N=1, neuron_attributes=None),
        load="spike time -5.0 ms lies outside the recording",
    ),
    Case("negative_length", _spikedata_with(length=-10.0), load="length must be >= 0 ms"),
    Case("nan_length", _spikedata_with(length=float("nan")), load="length must be finite"),
    Case("nan_start_time", _spikedata_with(start_time=float("nan")), load="start_time must be"),
    Case(
        "n_mismatch",
        _spikedata_with(N=5, neuron_attributes=None),
        load="N=5 but train holds 3 units",
    ),
    Case(
        "attributes_wrong_length",
        _spikedata_with(neuron_attributes=[{"electrode": 0}]),
        load="neuron_attributes has 1 entries for N=3 units",
    ),
    Case(
        "attributes_not_dicts",
        _spikedata_with(neuron_attributes=[1, 2, 3]),
        load="neuron_attributes[0] must be a dict",
    ),
    Case(
        "raw_data_without_raw_time",
        _spikedata_with(raw_data=np.zeros((2, 10))),
        load="raw_time has 0 samples but raw_data has 10",
    ),
    Case(
        "raw_time_length_mismatch",
        _spikedata_with(raw_data=np.zeros((2, 10)), raw_time=np.arange(7.0)),
        load="raw_time has 7 samples but raw_data has 10",
    ),
    Case(
        "raw_time_without_raw_data",
        _spikedata_with(raw_time=np.arange(7.0)),
        load="raw_time has 7 samples but raw_data is empty",
    ),
    Case(
        "non_numeric_spike_times",
        _spikedata_with(train=[np.array(["1.0", "2.0"])], N=1, neuron_attributes=None),
        load="spike times must be numbers (ms)",
    ),
    Case(
        "train_not_a_list",
        _spikedata_with(train={"a": 1}),
        load="SpikeData.train must be a list of arrays",
    ),
    Case("metadata_not_a_dict", _spikedata_with(metadata=[1, 2]), load="metadata must be a dict"),
    # ---------------------------------------------------- exports the recording cannot satisfy
    Case("no_fs", lambda s: _dump(good(metadata={})), export=_NO_FS),
    Case("fs_zero", lambda s: _dump(good(metadata={"fs_Hz": 0})), export=_bad_fs("0")),
    Case(
        "fs_negative",
        lambda s: _dump(good(metadata={"fs_Hz": -20000.0})),
        export=_bad_fs("-20000.0"),
    ),
    Case(
        "fs_nan",
        lambda s: _dump(good(metadata={"fs_Hz": float("nan")})),
        export=_bad_fs("nan"),
    ),
    Case(
        "duplicate_cluster_ids",
        lambda s: _dump(
            good(neuron_attributes=[{"cluster_id": 4}, {"cluster_id": 4}, {"cluster_id": 5}])
        ),
        export={"kilosort": "must be unique; repeated: [4]"},
    ),
    Case(
        "negative_cluster_id",
        lambda s: _dump(
            good(neuron_attributes=[{"cluster_id": -1}, {"cluster_id": 0}, {"cluster_id": 1}])
        ),
        export={"kilosort": "must lie in 0.."},
    ),
    # ------------------------------------------------------------------ hostile pickles
    Case(
        "evil_os_system",
        _hostile(os.system, lambda s: (f"touch {s}/PWNED-os_system",)),
        load="refused",
        unsafe=f"{os.system.__module__}.system",
    ),
    Case(
        "evil_subprocess",
        _hostile(subprocess.Popen, lambda s: (["touch", f"{s}/PWNED-subprocess"],)),
        load="refused",
        unsafe="subprocess.Popen",
    ),
    Case(
        "evil_eval",
        _hostile(eval, lambda s: (f"open({str(s)!r} + '/PWNED-eval', 'w')",)),
        load="refused",
        unsafe="builtins.eval",
    ),
    Case(
        "evil_eval_protocol2",  # Python 2 names are mapped, and refused just the same
        _hostile(eval, lambda s: (f"open({str(s)!r} + '/PWNED-eval2', 'w')",), protocol=2),
        load="refused",
        unsafe="__builtin__.eval",
    ),
    Case(
        "evil_exec",
        _hostile(exec, lambda s: (f"open({str(s)!r} + '/PWNED-exec', 'w')",)),
        load="refused",
        unsafe="builtins.exec",
    ),
    Case(
        "evil_importlib",
        _hostile(__import__("importlib").import_module, lambda s: (EVIL_MODULE,)),
        load="refused",
        unsafe="importlib.import_module",
    ),
    Case(
        "evil_unexpected_global",
        _hostile(__import__("shutil").copyfile, lambda s: (os.devnull, f"{s}/PWNED-copyfile")),
        load="refused",
        unsafe="shutil.copyfile",
    ),
    Case(
        "evil_protocol0_getattr",
        _text_pickle(
            "cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR"
            "(S'touch {s}/PWNED-getattr'\ntR."
        ),
        load="refused",
        unsafe="builtins.getattr",
    ),
    Case(
        "evil_spikedata_callable_attribute",
        _spikedata_with(hook=lambda s: _Reduce(os.system, (f"touch {s}/PWNED-attribute",))),
        load="refused",
        unsafe=f"{os.system.__module__}.system",
    ),
    Case(
        "evil_spikedata_callable_in_metadata",
        _spikedata_with(
            metadata=lambda s: {"fs_Hz": FS, "cb": _Reduce(exec, (f"open('{s}/PWNED-md','w')",))}
        ),
        load="refused",
        unsafe="builtins.exec",
    ),
    Case(
        "evil_spikedata_class_attribute",
        _spikedata_with(hook=dict),
        load="SpikeData attribute 'hook' holds a callable or class; refused",
    ),
)

BY_NAME = {c.name: c for c in CASES}


def write_corpus(folder: Path, sentinel_dir: Path, cases=CASES) -> dict[str, Path]:
    """Write every case as ``<folder>/<name>.pkl``; return name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    sentinel_dir.mkdir(parents=True, exist_ok=True)
    write_evil_module(sentinel_dir)
    paths = {}
    for case in cases:
        path = folder / f"{case.name}.pkl"
        path.write_bytes(case.build(sentinel_dir))
        paths[case.name] = path
    return paths


def sentinels(sentinel_dir: Path) -> list[str]:
    """Files a hostile payload would have created (must stay empty)."""
    return sorted(p.name for p in sentinel_dir.iterdir() if p.name.startswith("PWNED"))
