"""NWB per-file cost in a warm process: pynwb's default write against ours, and both readers.

Usage::

    .venv/bin/python bench/bench_nwb.py [--files 20] [--rounds 7] [--isolated] [--profile]

Writes the same small recording (``tests/data/small.pkl``: 8 units, 1396 spikes, 10 s, 72
electrode rows; ``--pickle`` for another) again and again in one process, after a warm-up:

- ``write, pynwb default``: ``export_spikedata_to_nwb`` with the file written as pynwb writes by
  default (``NWBHDF5IO(mode="w")``: a deep copy of pynwb's TypeMap and the specification cached
  by hdmf, for every file), i.e. the writer before the shared TypeMap and specification
  template. Same NWBFile, same checks and identifier as ours: only the write differs.
- ``write, spikelab``: the exporter as it is (see ``spikelab.formats.nwb.write._SharedWriter``).
- ``read, pynwb`` / ``read, h5py``: ``load_spikedata_from_nwb(prefer_pynwb=True/False)`` of the
  file (both include the whole-file safety check that every untrusted file gets). ``read, h5py``
  is how the export job verified each NWB output before it told the reader the file is its own.
- ``read, h5py, own output``: the export job's verification now (``prefer_pynwb=False`` with
  ``own_output``, the identity the writer recorded: the whole-file check is skipped for the
  file this process has just written, see ``spikelab.workflow.verify.verify_written``).

The last lines add up the export job's NWB work per recording, write and verification
read-back: before (our write, read with the whole-file check) and now (our write, read as our
own output).

The variants alternate in rounds of ``--files`` files; each line shows the median over
``--rounds`` rounds of the wall and CPU ms per file (a shared machine slows all of them alike,
so compare within one run). ``--isolated`` adds the writes each in a forked child, as the
workflow's batch jobs do (``isolation: enabled``). ``--profile`` prints cProfile's view of our
write (where the time goes) and the share of hdmf's argument checking (docval).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SMALL = HERE.parent / "tests" / "data" / "small.pkl"
OPTIONS = {
    "session_start_time": "2024-05-01T10:00:00+02:00",
    "subject_id": "mouse-01",
    "species": "Mus musculus",
    "sex": "F",
    "age": "P90D",
}


def _writer(plain: bool) -> Callable[[object, Path], None]:
    """Export with our write, or with pynwb's default write of the same NWBFile."""
    from spikelab.formats.nwb import export_spikedata_to_nwb
    from spikelab.formats.nwb import write as nwb_write

    ours = nwb_write._write_nwbfile

    def export(sd, path: Path) -> None:
        nwb_write._write_nwbfile = nwb_write._write_nwbfile_plain if plain else ours
        try:
            export_spikedata_to_nwb(sd, path, **OPTIONS)
        finally:
            nwb_write._write_nwbfile = ours

    return export


def _isolated(export: Callable[[object, Path], None]) -> Callable[[object, Path], None]:
    from spikelab.isolation import run_isolated

    def run(sd, path: Path) -> None:
        run_isolated(lambda: export(sd, path))

    return run


def _reader(prefer_pynwb: bool, own: object = None) -> Callable[[object, Path], None]:
    """Read the file; with ``own`` (the WrittenFile its writer recorded) as our own output."""
    from spikelab.formats.nwb import load_spikedata_from_nwb

    def read(_sd, path: Path) -> None:
        load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb, own_output=own)

    return read


def _cpu() -> float:
    """CPU seconds of this process and of its children that ended."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _round(run, sd, paths) -> tuple[float, float]:
    """Wall and CPU ms per file of ``run`` over ``paths``."""
    wall, cpu = time.perf_counter(), _cpu()
    for path in paths:
        run(sd, path)
    n = len(paths)
    return (time.perf_counter() - wall) * 1e3 / n, (_cpu() - cpu) * 1e3 / n


#: Phases of our write: (label, file name ending, function name); cumulative times.
PHASES = (
    ("NWB objects (pynwb containers)", "nwb/write.py", "_build_nwbfile"),
    ("hdmf build (object mapping)", "hdmf/build/manager.py", "build"),
    ("hdmf write_builder (h5py writes)", "hdmf/backends/hdf5/h5tools.py", "write_builder"),
    ("spike times", "formats/streaming.py", "write_hdf5_times"),
    ("cached specification (copy)", "nwb/write.py", "cache_spec"),
)


def _profile(sd, root: Path, files: int) -> None:
    """cProfile of ``files`` exports: the phases, hdmf's docval share, the top functions."""
    export = _writer(plain=False)
    profile = cProfile.Profile()
    profile.enable()
    for i in range(files):
        export(sd, root / f"profile{i}.nwb")
    profile.disable()
    stats = pstats.Stats(profile)
    total = stats.total_tt

    def cumulative(file_end: str, name: str) -> float:
        # the outermost calls of a recursive function carry its cumulative time
        rows = stats.stats.items()
        return max((r[3] for (f, _, n), r in rows if n == name and f.endswith(file_end)), default=0)

    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(25)
    print(out.getvalue())
    print(f"under cProfile: {total * 1e3 / files:.1f} ms per file")
    rest = total
    for label, file_end, name in PHASES:
        seconds = cumulative(file_end, name)
        rest -= seconds
        print(f"  {label:<40} {seconds * 1e3 / files:>6.1f} ms {seconds / total:>4.0%}")
    print(f"  {'the rest (checks, file open/close/rename)':<40} {rest * 1e3 / files:>6.1f} ms")
    # one _check_args closure per docval-decorated function, never recursive
    docval = sum(row[3] for (_, _, n), row in stats.stats.items() if n == "_check_args")
    print(f"  of the whole, hdmf's docval argument checks: {docval / total:.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pickle", type=Path, default=SMALL, help="the recording (SpikeData)")
    ap.add_argument("--files", type=int, default=20, help="files per variant and round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--isolated", action="store_true", help="also write in forked children")
    ap.add_argument("--profile", action="store_true", help="cProfile of our write")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    from spikelab.formats.pickle_io import load_spikedata_from_pickle

    sd = load_spikedata_from_pickle(args.pickle)
    n_spikes = sum(t.size for t in sd.train)
    variants = {
        "write, pynwb default": _writer(plain=True),
        "write, spikelab": _writer(plain=False),
    }
    if args.isolated:
        variants["write, pynwb default, isolated"] = _isolated(_writer(plain=True))
        variants["write, spikelab, isolated"] = _isolated(_writer(plain=False))
    variants["read, pynwb"] = _reader(prefer_pynwb=True)
    variants["read, h5py"] = _reader(prefer_pynwb=False)
    variants["read, h5py, own output"] = None  # once the file is written (below)

    with tempfile.TemporaryDirectory(prefix="spikelab-bench-nwb-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        import pynwb  # noqa: F401

        from spikelab.formats.nwb import write as nwb_write

        t1 = time.perf_counter()
        nwb_write._shared_writer()  # the TypeMap copy and the specification template
        t2 = time.perf_counter()
        _writer(plain=False)(sd, root / "first.nwb")
        from spikelab.formats.atomic import written_file
        from spikelab.formats.strict_hdf5 import StrictH5

        own = written_file(root / "first.nwb")  # kept: the record holds the last 256 files
        assert own is not None and own.matches(os.stat(root / "first.nwb"))
        variants["read, h5py, own output"] = _reader(prefer_pynwb=False, own=own)
        checks = StrictH5.check_whole_file
        StrictH5.check_whole_file = None  # must not run for our own output
        variants["read, h5py, own output"](sd, root / "first.nwb")
        StrictH5.check_whole_file = checks
        once = f"import pynwb {(t1 - t0) * 1e3:.0f} ms, shared writer {(t2 - t1) * 1e3:.0f} ms"
        # Writers write to their own names; readers read the file ours wrote.
        paths = {
            name: [root / f"w{v}_{i}.nwb" for i in range(args.files)]
            for v, name in enumerate(variants)
        }
        for name in variants:
            if name.startswith("read"):
                paths[name] = [root / "first.nwb"] * args.files
        for name, run in variants.items():  # warm-up
            run(sd, paths[name][0])
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, run in variants.items():
                results[name].append(_round(run, sd, paths[name]))
        if args.profile:
            _profile(sd, root, args.files)

    print(
        f"{args.pickle.name}: {sd.N} units, {n_spikes} spikes, {sd.length / 1e3:g} s; "
        f"median of {args.rounds} rounds of {args.files} files; ms per file"
    )
    print(f"once per process: {once}")
    print(f"{'':<32} {'wall':>7} {'cpu':>7}   of pynwb default (wall, cpu)")
    medians = {
        name: (statistics.median(w for w, _ in rows), statistics.median(c for _, c in rows))
        for name, rows in results.items()
    }
    for name, (wall, cpu) in medians.items():
        ratio = ""
        if name.startswith("write"):
            base = "write, pynwb default" + (", isolated" if name.endswith("isolated") else "")
            ratio = f"{wall / medians[base][0]:.2f}, {cpu / max(medians[base][1], 1e-9):.2f}"
        print(f"{name:<32} {wall:>7.1f} {cpu:>7.1f}   {ratio}")
    write = medians["write, spikelab"]
    print("export job's NWB per recording (write + verification read-back):")
    for label, read in (
        ("before (read, h5py)", "read, h5py"),
        ("now (read, h5py, own output)", "read, h5py, own output"),
    ):
        wall, cpu = write[0] + medians[read][0], write[1] + medians[read][1]
        print(f"  {label:<30} {wall:>7.1f} {cpu:>7.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
