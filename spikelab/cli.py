"""The command line: ``spikelab convert`` and ``spikelab inspect``, for one-off jobs at a
terminal, on the same library calls as the workflow.

- The outputs are the workflow's targets (:class:`~spikelab.workflow.targets.Target`, built by
  each format's registry entry from a config-like block), laid out as under ``results/``:
  ``DIR/nwb/<name>.nwb``, ``DIR/hdf5/<style>/<name>.h5``, ``DIR/kilosort/<name>/``,
  ``DIR/pickle/<name>.pkl``.
- Every input is read once and converted to every target in a worker child process
  (:func:`spikelab.jobs.for_each_recording` with :mod:`spikelab.isolation`), under the memory
  and time a workflow job converting that one file would ask for; each output is then read
  back with its format's reader and compared with the input as read
  (:func:`~spikelab.workflow.verify.compare_spikedata`, the registry's tolerances).
- Options are checked before any output is written: names against the registry (with a
  did-you-mean), values by writing and reading a one-spike recording in a temporary folder.
- A bad input fails alone: one line on stderr naming the file and the fault, exit status 1.

Exit status: 0 when every input was converted (and verified), 1 when any failed, 2 for a
usage error (nothing written).
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikelab.formats.errors import ExportError

__all__ = ["main", "build_parser", "detect_input_format"]

log = logging.getLogger("spikelab.cli")

PROG = "spikelab"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

INPUT_KINDS = ".pkl, .nwb, .h5/.hdf5, or a KiloSort/Phy folder (spike_times.npy + params.py)"

HDF5_STYLES = ("ragged", "raster", "group", "paired")
#: Where a sampling rate came from (:func:`~spikelab.workflow.inputs.resolve_fs_Hz`), in the
#: command line's terms.
FS_SOURCES = {"config fs_Hz": "--fs-Hz"}


class UsageError(Exception):
    """A command line that cannot work; reported in one line, exit status 2, nothing written."""


# ----------------------------------------------------------------------------- inputs
def detect_input_format(path: str | os.PathLike) -> str | None:
    """The registered format name of the input at ``path`` (a file by its suffix, a folder by
    its content; :func:`~spikelab.formats.registry.input_format_for`), or None."""
    from spikelab.formats.registry import input_format_for

    p = Path(path)
    if not (p.is_dir() or p.is_file()):
        return None
    fmt = input_format_for(os.fspath(p), is_dir=p.is_dir())
    if fmt is None and p.is_file() and p.suffix.lower() == ".pickle":
        return "pickle"
    return None if fmt is None else fmt.name


def _read_input(
    path: str | os.PathLike,
    *,
    pickle_loading: Mapping[str, Any] | None = None,
    fs_Hz: float | None = None,
):
    """Read one input (any format :func:`detect_input_format` recognises) as SpikeData (ms),
    with the workflow's source loader: the restricted unpickler for pickles (or the opt-ins
    in ``pickle_loading``: ``trusted``, ``allow_globals``), each other format's reader with its
    content checks; ``fs_Hz`` (Hz) is used only where the file gives no rate."""
    from spikelab.formats.errors import LoadError
    from spikelab.jobs import load_source

    fmt = detect_input_format(path)
    if fmt is None:
        raise LoadError(f"{path}: not a recognised input (expected {INPUT_KINDS})")
    return load_source(path, pickle_loading, source_format=fmt, default_fs_Hz=fs_Hz)


@dataclass(frozen=True)
class Input:
    """One input: its recording ``name`` (output file names), its ``source`` path, and why it
    cannot be converted (``problem``), if known before reading it."""

    recording: str
    source: str
    problem: str = ""


def _recording_name(path: Path) -> str:
    return path.name if path.is_dir() else (path.stem if path.suffix else path.name)


def collect_inputs(sources: Sequence[str]) -> list[Input]:
    """The inputs named on the command line: files and KiloSort/Phy folders as they are, every
    input directly in any other folder (hidden entries skipped), in name order per folder.
    A missing path, an unrecognised file, an empty folder, a name that cannot be a file name
    and two inputs of the same name become inputs with a ``problem``."""
    from spikelab.workflow.inputs import name_problem

    found: list[Input] = []
    for src in sources:
        p = Path(src)
        if not p.exists():
            found.append(Input(p.name or src, src, "no such file or folder"))
        elif detect_input_format(p) is not None:
            found.append(Input(_recording_name(p), src))
        elif p.is_dir():
            entries = sorted(e for e in p.iterdir() if not e.name.startswith("."))
            inside = [e for e in entries if detect_input_format(e) is not None]
            if not inside:
                found.append(Input(p.name or src, src, f"no input in this folder ({INPUT_KINDS})"))
            found += [Input(_recording_name(e), str(e)) for e in inside]
        else:
            found.append(Input(p.name, src, f"not a recognised input (expected {INPUT_KINDS})"))
    by_name: dict[str, list[Input]] = {}
    for item in found:
        if not item.problem:
            by_name.setdefault(item.recording.casefold(), []).append(item)
    checked = []
    for item in found:
        problem = item.problem
        if not problem:
            why = name_problem(item.recording)
            same = [o.source for o in by_name[item.recording.casefold()] if o is not item]
            if why:
                problem = f"{item.recording!r} cannot be an output name: it {why}; rename the input"
            elif same:
                problem = (
                    f"another input has the name {item.recording!r} (up to case): "
                    f"{', '.join(same)}; their outputs would collide"
                )
        checked.append(Input(item.recording, item.source, problem))
    return checked


# ----------------------------------------------------------------------------- options
def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _split_list(values: Sequence[str] | None) -> list[str]:
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def parse_formats(values: Sequence[str]) -> list[str]:
    """The formats of ``--to`` (comma-separated, repeatable), in registry order."""
    from spikelab.formats.registry import format_names

    known = format_names()
    asked = _split_list(values)
    for name in asked:
        if name not in known:
            raise UsageError(
                f"--to: unknown format {name!r}{_did_you_mean(name, known)}; "
                f"known formats: {', '.join(known)}"
            )
    if not asked:
        raise UsageError(f"--to: name at least one format ({', '.join(known)})")
    return [name for name in known if name in asked]


def parse_styles(values: Sequence[str] | None) -> list[str]:
    styles = _split_list(values) or ["ragged"]
    for style in styles:
        if style not in HDF5_STYLES:
            raise UsageError(
                f"--hdf5-style: unknown style {style!r}{_did_you_mean(style, HDF5_STYLES)}; "
                f"styles: {', '.join(HDF5_STYLES)}"
            )
    return list(dict.fromkeys(styles))


class _NotFinite(Exception):
    pass


def _no_constant(text: str):
    raise _NotFinite(text)


def parse_value(text: str) -> Any:
    """An option value: JSON when it parses as JSON (numbers, null, true/false, lists, quoted
    text), else the text itself. NaN and infinities are refused (ValueError)."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except _NotFinite as exc:
        raise ValueError(f"{exc} is not a finite number") from None
    except ValueError:
        return text


def parse_options(values: Sequence[str] | None, formats: Sequence[str]) -> dict[str, dict]:
    """``FORMAT.KEY=VALUE`` options as ``{format: {key: value}}``; names are checked against
    the registry (``option_keys``) and the formats of ``--to``."""
    from spikelab.formats.registry import format_names, get_format

    options: dict[str, dict] = {}
    for text in values or ():
        name, eq, value = text.partition("=")
        fmt, dot, key = name.strip().partition(".")
        if not eq or not dot or not key:
            raise UsageError(f"--option {text!r}: expected FORMAT.KEY=VALUE, e.g. nwb.lab=MyLab")
        if fmt not in format_names():
            raise UsageError(
                f"--option {name}: unknown format {fmt!r}{_did_you_mean(fmt, format_names())}; "
                f"known formats: {', '.join(format_names())}"
            )
        if fmt not in formats:
            raise UsageError(f"--option {name}: {fmt} is not among the formats of --to")
        spec = get_format(fmt)
        if key not in spec.option_keys:
            suggestion = _did_you_mean(key, spec.option_keys)
            raise UsageError(
                f"--option {name}: {fmt} has no option {key!r}{suggestion}; "
                f"{fmt} takes: {', '.join(spec.option_keys)}"
            )
        if fmt == "hdf5" and key == "style":
            raise UsageError(f"--option {name}: set the HDF5 style with --hdf5-style")
        if key in options.get(fmt, {}):
            raise UsageError(f"--option {name} is given twice")
        try:
            options.setdefault(fmt, {})[key] = parse_value(value)
        except ValueError as exc:
            raise UsageError(f"--option {name}: {exc}") from None
    return options


def build_targets(formats: Sequence[str], options: Mapping[str, Mapping], styles: Sequence[str]):
    """The targets of ``formats``, each built by its format's registry entry from a config
    block (HDF5: one entry per style, named after it). An option that no target uses (a key
    of another HDF5 style) is an error."""
    from spikelab.formats.errors import OptionError
    from spikelab.formats.registry import get_format
    from spikelab.workflow.targets import Target

    targets = []
    for fmt in formats:
        spec = get_format(fmt)
        given = dict(options.get(fmt, {}))
        block = {s: {"style": s, **given} for s in styles} if fmt == "hdf5" else given
        try:
            outputs = spec.outputs_from_config(block)
        except OptionError as exc:
            text = str(exc).replace("config key", "--option")
            for entry in block if fmt == "hdf5" else ():  # config entry -> the --option name
                text = text.replace(f"{fmt}.{entry}.", f"{fmt}.")
            raise UsageError(text) from None
        made = [Target(name, fmt, opts) for name, opts in outputs]
        used = {key for t in made for key in t.options}
        for key in given:
            if key not in used:
                names = ", ".join(t.name for t in made)
                raise UsageError(f"--option {fmt}.{key}: not used by {names}")
        targets += made
    return targets


def check_targets(targets, pickle_loading: Mapping[str, Any]) -> None:
    """Write a one-spike recording to every target in a temporary folder and read it back:
    options that cannot work fail here, before any output is written. (Also imports what the
    writers and readers need, so that each input's child starts with them loaded.)"""
    from spikelab.jobs import describe_error
    from spikelab.spikedata.spikedata import SpikeData

    sd = SpikeData([[1.0]], length=2.0, metadata={"fs_Hz": 1000.0})
    with tempfile.TemporaryDirectory(prefix="spikelab-check-") as tmp:
        for target in targets:
            path = f"{tmp}/{target.rule_name}/check{target.spec.extension}"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    kwargs = target.spec.writer_kwargs(target.options, "check", 1000.0)
                    target.spec.writer()(sd, path, **kwargs)
                    reader_kwargs = target.loader_kwargs(1000.0, pickle_loading=pickle_loading)
                    target.spec.reader()(path, **reader_kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure means the options cannot work
                raise UsageError(
                    f"{target.name}: these options cannot work: {describe_error(exc)}"
                ) from None


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number > 0")
    return value


# ----------------------------------------------------------------------------- convert
class OutputsFailed(ExportError):
    """Some outputs of one input failed (the others were written): a data fault of the input,
    whose message names each target and its fault."""


def _convert_one(item: Input, targets, out_dir: str, cfg: dict) -> dict:
    """Read ``item`` and write and verify every target (in the child); return a JSON-able
    summary, or raise a data fault naming what failed."""
    from spikelab import isolation
    from spikelab.formats.errors import LoadError, MissingSamplingRateError
    from spikelab.jobs import (
        COMPARING,
        DATA_FAULTS,
        EXPORTING,
        READING_OUTPUT,
        describe_error,
        is_environment_fault,
        output_size,
    )
    from spikelab.workflow.inputs import resolve_fs_Hz
    from spikelab.workflow.verify import compare_spikedata

    if item.problem:
        raise LoadError(f"{item.source}: {item.problem}")
    n_warnings = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd = _read_input(item.source, pickle_loading=cfg["pickle_loading"], fs_Hz=cfg["fs_Hz"])
    for w in caught:
        log.warning("%s: %s: %s", item.source, w.category.__name__, w.message)
        n_warnings += 1
    fs, fs_source = resolve_fs_Hz(None, sd.metadata, cfg["fs_Hz"])
    failures, written = [], []
    for target in targets:
        output = output_path(out_dir, target, item.recording)
        if os.path.realpath(output) == os.path.realpath(item.source):
            failures.append(f"{target.name}: the output {output} is the input itself")
            continue
        t0 = time.perf_counter()
        isolation.phase(EXPORTING)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if fs is None and target.needs_fs:
                    raise MissingSamplingRateError(
                        "needs a sampling rate: the input's metadata has no usable 'fs_Hz'; "
                        "pass --fs-Hz HZ"
                    )
                kwargs = target.spec.writer_kwargs(target.options, item.recording, fs)
                target.spec.writer()(sd, output, **kwargs)
                size = output_size(output)
                log.info(
                    "wrote %s (%d bytes, %.3f s) from %s%s",
                    output,
                    size,
                    time.perf_counter() - t0,
                    item.source,
                    f" at fs_Hz={fs:g} ({FS_SOURCES.get(fs_source, fs_source)})"
                    if target.uses_fs and fs
                    else "",
                )
                if cfg["verify"]:
                    isolation.phase(READING_OUTPUT)
                    reader_kwargs = target.loader_kwargs(fs, pickle_loading=cfg["pickle_loading"])
                    read = target.spec.reader()(output, **reader_kwargs)
                    isolation.phase(COMPARING)
                    abs_tol, ulps = target.time_tolerance(fs)
                    cmp = compare_spikedata(sd, read, abs_tol_ms=abs_tol, ulps=ulps)
                    if not cmp.ok:
                        failures.append(
                            f"{target.name}: {output} differs from the input: "
                            + "; ".join(cmp.problems)
                        )
                        continue
                    log.info(
                        "verified %s: %d units, %d spikes, max error %.3g ms",
                        output,
                        cmp.n_units,
                        cmp.n_spikes,
                        cmp.max_abs_error_ms,
                    )
            for w in caught:
                log.warning("%s: %s: %s", output, w.category.__name__, w.message)
                n_warnings += 1
            written.append(output)
        except Exception as exc:
            phase = isolation.current_phase()
            expected = isinstance(exc, DATA_FAULTS)
            if is_environment_fault(exc, phase) or not (expected or cfg["isolated"]):
                raise  # the machine's fault, or (in-process) a bug: stops the run
            where = "" if expected else f" (while {phase})"
            unreadable = "output unreadable: " if phase == READING_OUTPUT else ""
            failures.append(f"{target.name}: {unreadable}{describe_error(exc)}{where}")
    if failures:
        raise OutputsFailed("; ".join(failures))
    return {"outputs": written, "warnings": n_warnings}


def output_path(out_dir: str, target, recording: str) -> str:
    """``DIR/<target>/<recording><ext>``, the layout of the workflow's ``results/``."""
    return f"{out_dir}/{target.name}/{recording}{target.spec.extension}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _progress(items, *, enabled: bool):
    """A progress bar over ``items`` on stderr (counts, rate, ETA), or a silent one."""
    from tqdm import tqdm

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    sized = size.columns > 0 and size.lines > 0  # a terminal reporting 0 x 0 would hide the bar
    return tqdm(
        items,
        desc="converting",
        unit="input",
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=sized,
        ncols=None if sized else 80,
        nrows=None if sized else 20,
        leave=True,
    )


class _Stop(Exception):
    """``--on-bad fail``: the first failed input stops the run."""


def cmd_convert(args: argparse.Namespace) -> int:
    from spikelab import isolation
    from spikelab.formats.atomic import remove_stale_temporaries
    from spikelab.jobs import Fault, for_each_recording, may_run_code, output_size, setup_logging

    # Everything below up to the loop writes nothing.
    formats = parse_formats(args.to)
    options = parse_options(args.option, formats)
    styles = parse_styles(args.hdf5_style)
    if args.hdf5_style and "hdf5" not in formats:
        raise UsageError("--hdf5-style: hdf5 is not among the formats of --to")
    targets = build_targets(formats, options, styles)
    pickle_loading = {"trusted": args.trusted_pickles, "allow_globals": list(args.allow_global)}
    inputs = collect_inputs(args.sources)
    setup_logging(args.log, stderr_level=logging.CRITICAL + 1)
    log.info("spikelab %s: %s", _version(), " ".join(sys.argv[1:]))
    check_targets(targets, pickle_loading)
    if args.trusted_pickles:
        print(
            f"{PROG} convert: warning: --trusted-pickles: pickles are loaded with plain "
            "pickle.load, which runs any code they hold",
            file=sys.stderr,
        )
    isolated = not args.no_isolation and isolation.available()
    cfg = {
        "fs_Hz": args.fs_Hz,
        "verify": not args.no_verify,
        "pickle_loading": pickle_loading,
        "isolated": isolated,
    }
    out_dir = os.fspath(args.output)

    def limits(item: Input):
        """What a workflow job converting this one file would ask for (memory: the largest of
        the targets' models; time: their sum, twice with verification)."""
        try:
            size_mb = output_size(item.source) / 2**20
        except OSError:
            size_mb = 0.0
        memory_mb = max(t.spec.resources.mem_mb([size_mb]) for t in targets)
        seconds = sum(t.spec.resources.runtime_min([size_mb]) * 60.0 for t in targets)
        return isolation.Limits(
            memory_mb=args.memory_mb or memory_mb,
            seconds=args.seconds or seconds * (2 if cfg["verify"] else 1),
        )

    bar = _progress(
        inputs,
        enabled=len(inputs) > 1 and not args.quiet and sys.stderr.isatty(),
    )
    failed: list[Fault] = []

    def on_fault(item: Input, fault: Fault, keep_going: bool) -> dict:
        text = _one_line(fault.description)
        prefix = f"{OutputsFailed.__name__}: "
        text = text.removeprefix(prefix).replace(f"{item.source}: ", "", 1)
        line = f"{item.source}: {text}"
        failed.append(fault)
        bar.update(1)
        bar.write(f"{PROG}: FAILED {line}", file=sys.stderr)
        bar.set_postfix(failed=len(failed), refresh=False)
        log.error("FAILED %s", line)
        for note in getattr(fault.exception, "__notes__", ()):
            log.error("%s", note)
        for target in targets:
            remove_stale_temporaries(Path(output_path(out_dir, target, item.recording)))
        if not keep_going:
            raise _Stop
        return {}

    done: list[dict] = []  # results of the inputs converted, as they come back

    def record(result: dict) -> dict:
        done.append(result)
        bar.update(1)
        return result

    def convert(item: Input) -> dict:
        return _convert_one(item, targets, out_dir, cfg)

    t0 = time.perf_counter()
    stopped = False
    try:
        for_each_recording(
            inputs,
            convert if isolated else lambda item: record(convert(item)),
            on_fault=on_fault,
            on_bad_recording=args.on_bad,
            context=lambda item: f"while converting {item.source}",
            failed="{bad} of {total} inputs could not be converted",
            isolate=limits if isolated else None,
            decode=record,
            per_child=1 if may_run_code(pickle_loading) else None,
        )
    except _Stop:
        stopped = True
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    n_ok, n_files = len(done), sum(len(r["outputs"]) for r in done)
    n_warnings = sum(r["warnings"] for r in done)
    if not args.quiet:
        verified = ", each read back and verified" if cfg["verify"] else ", not verified"
        line = (
            f"{n_ok} of {len(inputs)} inputs converted to {', '.join(t.name for t in targets)} "
            f"in {out_dir}/ ({_plural(n_files, 'output')}{verified}; {seconds:.1f} s)"
        )
        if failed:
            line += f"; {len(failed)} failed"
        if stopped:
            untried = len(inputs) - len(done) - len(failed)
            line += f"; stopped at the first failure (--on-bad fail), {untried} not tried"
        if n_warnings:
            where = f"in {args.log}" if args.log else "--log FILE lists them"
            line += f"; {_plural(n_warnings, 'warning')} ({where})"
        print(line)
    log.info("%d of %d inputs converted, %d failed", n_ok, len(inputs), len(failed))
    return EXIT_FAILED if failed else EXIT_OK


# ----------------------------------------------------------------------------- inspect
def describe_input(path: str, *, pickle_loading: Mapping[str, Any], fs_Hz: float | None) -> dict:
    """What ``spikelab inspect`` reports of one input (JSON-able)."""
    from spikelab.formats.registry import format_names
    from spikelab.workflow.inputs import resolve_fs_Hz

    fmt = detect_input_format(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd = _read_input(path, pickle_loading=pickle_loading, fs_Hz=fs_Hz)
    fs, fs_source = resolve_fs_Hz(None, sd.metadata, fs_Hz)
    attributes: dict[str, None] = {}
    for attrs in sd.neuron_attributes or ():
        attributes.update(dict.fromkeys(str(k) for k in attrs))
    raw = sd.raw_data if getattr(sd.raw_data, "size", 0) else None
    converts = []
    for target in build_targets(format_names(), {}, ["ragged"]):
        ready = fs is not None or not target.needs_fs
        converts.append({"format": target.format, "needs_fs_Hz": target.needs_fs, "ready": ready})
    return {
        "file": os.fspath(path),
        "format": fmt,
        "units": int(sd.N),
        "spikes": int(sd.n_spikes),
        "duration_ms": float(sd.length),
        "start_time_ms": float(sd.start_time),
        "fs_Hz": fs,
        "fs_Hz_source": None if fs is None else FS_SOURCES.get(fs_source, fs_source),
        "neuron_attributes": list(attributes),
        "metadata": [str(k) for k in sd.metadata],
        "raw_data": raw is not None,
        "raw_data_shape": None if raw is None else [int(n) for n in raw.shape],
        "converts_to": converts,
    }


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def format_description(info: Mapping[str, Any]) -> str:
    """The text form of :func:`describe_input`."""
    fs = info["fs_Hz"]
    raw = "no"
    if info["raw_data"]:
        raw = "yes (" + " x ".join(str(n) for n in info["raw_data_shape"]) + ")"
    converts = []
    for c in info["converts_to"]:
        note = "" if c["ready"] else " (needs a sampling rate: pass --fs-Hz HZ)"
        converts.append(c["format"] + note)
    rows = [
        ("file", info["file"]),
        ("format", info["format"]),
        ("units", info["units"]),
        ("spikes", info["spikes"]),
        ("duration", f"{_number(info['duration_ms'])} ms"),
        ("start_time", f"{_number(info['start_time_ms'])} ms"),
        ("fs_Hz", "none" if fs is None else f"{_number(fs)} ({info['fs_Hz_source']})"),
        ("neuron_attributes", ", ".join(info["neuron_attributes"]) or "none"),
        ("metadata", ", ".join(info["metadata"]) or "none"),
        ("raw data", raw),
        ("converts to", ", ".join(converts)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def cmd_inspect(args: argparse.Namespace) -> int:
    from spikelab import isolation
    from spikelab.formats.registry import get_format
    from spikelab.jobs import DATA_FAULTS, describe_error, output_size

    pickle_loading = {"trusted": args.trusted_pickles, "allow_globals": list(args.allow_global)}
    path = args.file
    fmt = detect_input_format(path)
    if fmt is None:
        why = "no such file or folder" if not os.path.exists(path) else "not a recognised input"
        print(f"{PROG} inspect: error: {path}: {why} (expected {INPUT_KINDS})", file=sys.stderr)
        return EXIT_FAILED

    def work() -> dict:
        return describe_input(path, pickle_loading=pickle_loading, fs_Hz=args.fs_Hz)

    try:
        if args.no_isolation or not isolation.available():
            info = work()
        else:
            resources = get_format(fmt).resources
            size_mb = output_size(path) / 2**20
            limits = isolation.Limits(
                memory_mb=args.memory_mb or resources.mem_mb([size_mb]),
                seconds=args.seconds or resources.runtime_min([size_mb]) * 60.0,
            )
            info = isolation.run_isolated(
                work, limits=limits, is_expected=lambda exc: isinstance(exc, DATA_FAULTS)
            )
    except isolation.ChildFailure as failure:
        text = _one_line(failure.describe())
        line = f"{path}: " + text.replace(f"{path}: ", "", 1)
        print(f"{PROG} inspect: error: {line}", file=sys.stderr)
        return EXIT_FAILED
    except DATA_FAULTS as exc:
        text = describe_error(exc)
        line = f"{path}: " + text.replace(f"{path}: ", "", 1)
        print(f"{PROG} inspect: error: {line}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(format_description(info))
    return EXIT_OK


# ----------------------------------------------------------------------------- parser
def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("spikelab")
    except metadata.PackageNotFoundError:
        import spikelab

        return getattr(spikelab, "__version__", "unknown")


def _add_loading(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fs-Hz",
        dest="fs_Hz",
        type=_positive_number,
        metavar="HZ",
        help="sampling rate (Hz) for inputs whose metadata has no fs_Hz",
    )
    parser.add_argument(
        "--trusted-pickles",
        action="store_true",
        help="load pickles with plain pickle.load, which runs any code in them: "
        "only for files you made",
    )
    parser.add_argument(
        "--allow-global",
        action="append",
        default=[],
        metavar="MODULE.NAME",
        help="a global the restricted pickle loader may accept (repeatable)",
    )
    parser.add_argument(
        "--no-isolation",
        action="store_true",
        help="read (and convert) in this process, not one child process per input",
    )
    parser.add_argument(
        "--memory-mb",
        type=_positive_number,
        metavar="MB",
        help="memory one input's child may use (default: from the formats' resource models)",
    )
    parser.add_argument(
        "--seconds",
        type=_positive_number,
        metavar="S",
        help="wall time one input's child may take (default: from the resource models)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Convert SpikeData recordings (spike times in ms) between pickle, HDF5, "
        "NWB and KiloSort/Phy folders, with the workflow's checks.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    convert = sub.add_parser(
        "convert",
        help="convert inputs to other formats, read each output back and verify it",
        description="Convert each input to every format of --to, into "
        "DIR/<format>/<name><ext> (HDF5: DIR/hdf5/<style>/<name>.h5), read each output back "
        "and compare it with the input. Exit status 1 when any input failed (one line each "
        "on stderr), 2 for a bad command line (nothing written).",
    )
    convert.add_argument(
        "sources",
        nargs="+",
        metavar="SRC",
        help=f"an input ({INPUT_KINDS}) or a folder of inputs",
    )
    convert.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="FORMATS",
        help="formats to write, comma-separated: hdf5, nwb, kilosort, pickle",
    )
    convert.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    convert.add_argument(
        "--hdf5-style",
        action="append",
        metavar="STYLE",
        help="HDF5 layout(s), comma-separated: ragged (default), raster, group, paired",
    )
    convert.add_argument(
        "--option",
        action="append",
        metavar="FORMAT.KEY=VALUE",
        help="a writer option, as in config.yaml (e.g. nwb.lab=MyLab, "
        "hdf5.raster_bin_size_ms=1.0); VALUE is JSON if it parses as JSON, else text",
    )
    convert.add_argument(
        "--no-verify", action="store_true", help="do not read the outputs back to compare"
    )
    convert.add_argument(
        "--on-bad",
        choices=("continue", "fail"),
        default="continue",
        help="continue: convert the other inputs (default); fail: stop at the first bad one",
    )
    convert.add_argument("--log", metavar="FILE", help="write details (one line per event) here")
    convert.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no summary line"
    )
    _add_loading(convert)
    convert.set_defaults(run=cmd_convert)

    inspect = sub.add_parser(
        "inspect",
        help="describe one input: units, spikes, times, fields, format",
        description="Describe one input: units, spikes, duration and start time (ms), the "
        "fields it holds, its format and what it converts to.",
    )
    inspect.add_argument("file", metavar="FILE", help=f"an input ({INPUT_KINDS})")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    _add_loading(inspect)
    inspect.set_defaults(run=cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    root = logging.getLogger()
    if not root.handlers:  # no "last resort" echo of log records on stderr
        root.addHandler(logging.NullHandler())
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a fault of the machine (a full disk) or a bug: stop, in one line
        from spikelab.jobs import describe_error

        log.exception("stopped")
        notes = " ".join(getattr(exc, "__notes__", ()))
        text = _one_line(f"{describe_error(exc)} {notes}")
        print(f"{PROG} {args.command}: error: {text}", file=sys.stderr)
        return EXIT_FAILED
