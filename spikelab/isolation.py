"""Run work on untrusted recordings in forked child processes under memory and time limits,
so that whatever a recording makes them meet (a crash, a memory bomb, a hang, an exception)
ends with a child, not the caller, and is reported as that recording's fault.

**A persistent worker per batch.** :func:`run_each_isolated` forks one child (a *worker*)
that works through the items one after another. The first worker pays the imports its work
needs (pynwb, matplotlib) as work in the caller would; before forking any other the caller
runs its ``warm_up``, so fresh workers start with them (and a failure in the first worker,
which did not, is judged again by a warm one). Before each item it sends ``{"start": k}``, then the
phases of the work (:func:`phase`), its log records, and the item's result as JSON lines on a
pipe; nothing it sends is unpickled. The parent enforces the limits of the item being worked
on: its wall time (counted from its start; on expiry the worker is killed and the item fails
with ``took longer than ... s``), its memory (``RLIMIT_AS`` of the worker: the address space
the parent had at the fork plus that item's ``memory_mb``), no core dumps, death with the
parent (Linux). A worker that dies or fails on an item (a signal, ``os._exit``, a MemoryError,
any exception) is gone; a fresh worker is forked for the next item. Forking once per batch
instead of once per item is what makes isolation cheap (``bench/bench_isolation.py``): a fork
and exit cost 3-6 ms here, plus a copy-on-write fault for every parent page the work touches.

**What may carry over from one item to the next, and what is done about it.** A per-item
child started every item from the parent's state; a worker starts item k+1 in the state item k
left. So:

- *Failures are judged by a fresh worker.* An item that fails in a worker that already
  worked on other items (other than by a timeout or an environment fault) is run again in a
  fresh worker, and only that verdict counts: a leak, a fragmented heap or a bug-corrupted state
  left by earlier items cannot make a good item fail, and every failure record is what a child
  of its own would have reported. The log records of the dropped attempt are dropped with it
  (the parent holds each item's records until the item's outcome is known); what the work
  writes straight to stdout/stderr is not, and a failing item's work runs twice.
- *Growth is bounded.* The memory limit is the worker's whole address space, so a worker
  that grows (a leak, a fragmented heap, caches) leaves less for its next item. Between items
  it therefore retires (a fresh one takes over) once its address space or resident memory has
  grown by more than :data:`RESTART_GROWTH` of the next item's limit since it was forked
  (:data:`RESTART_GROWTH_MB` without a limit): no item starts with less than half its budget,
  and one that needs more than is left is run again in a fresh worker (above).
- *Module globals.* What spikelab keeps per process is built from code, not from a
  recording, or is tested to hold nothing of one recording when the next is written: this
  module's phase (reset before each item); the restricted unpickler's table of allowed
  globals; the NWB writer's TypeMap and cached specification (every file gets a BuildManager
  of its own: ``tests/test_nwb_shared_writer.py``); the report's kept figure and glyph cache
  (a figure drawn after others is byte for byte the one drawn in a fresh process:
  ``tests/test_report_figures.py``). Writers and readers open files in ``with`` blocks; pynwb
  reads each file with a copy of its type map (namespaces cached in one file never reach the
  next). The libraries' own caches are keyed by code or text (matplotlib's fonts and text
  sizes), which changes timing, never content. Warning filters and "already shown"
  registries are reset before each item (``warnings.catch_warnings``), so each item logs its
  warnings as a child of its own did.
- *Memory that a bug leaves uninitialised* (an ``np.empty`` not fully written) may hold an
  earlier item's data, where a fresh child held only the parent's. The loaders never hand out
  such memory (a bare ``numpy.ndarray(...)`` in a pickle is refused), writers fill what they
  allocate, and the workflow's verify jobs compare every output with its own source. (Having
  glibc overwrite every freed block, ``M_PERTURB``, was measured: it multiplies an NWB
  export's page faults by 70, ~40 ms per recording, so it is not done.)
- *An item's own code that keeps state* (a cache in a module global, code a trusted pickle
  runs) can see the earlier items of its worker. Such work takes ``per_child=1`` (a child per
  item, the former design): :mod:`spikelab.jobs` does so whenever the pickle opt-ins let a
  source run code.

Used by :mod:`spikelab.jobs` for every recording of a batch job; :func:`run_isolated` runs a
single function in a child of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import gc
import json
import logging
import os
import resource
import select
import signal
import sys
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Limits",
    "ChildFailure",
    "RESTART_GROWTH",
    "RESTART_GROWTH_MB",
    "available",
    "phase",
    "current_phase",
    "resident_mb",
    "run_each_isolated",
    "run_isolated",
]

#: A worker retires between items once it has grown (address space or resident memory, since
#: its fork) by more than this fraction of the next item's memory limit ...
RESTART_GROWTH = 0.5
#: ... or by more than this many MB when items have no memory limit.
RESTART_GROWTH_MB = 1024.0

_MAX_REPORT_BYTES = 16 << 20  # longest message a child may send (results are small JSON)
_child_fd: int | None = None  # the pipe to the parent, in a child
_phase = "starting"
_pending = bytearray()  # messages held back to go with the next one (one write, one wake-up)


@dataclass(frozen=True)
class Limits:
    """Limits of one item's work: ``memory_mb`` (MB it may allocate beyond the address space
    the parent had when it forked the worker) and ``seconds`` (wall time); None for no limit."""

    memory_mb: float | None = None
    seconds: float | None = None


class ChildFailure(Exception):
    """The child did not return a result.

    ``kind`` is ``"exception"`` (it raised: ``type_name`` and ``message`` say what),
    ``"signal"`` (it died by ``signal_name``), ``"timeout"`` (killed after ``seconds``),
    ``"memory"`` (it raised MemoryError under its limit) or ``"no-report"`` (it exited without
    a result). ``phase`` is the last phase it reported. ``environment`` is True when the
    child judged the error a fault of the environment (a full disk), not of its input;
    ``expected`` is False for exceptions of types the work does not raise on purpose (their
    description names the phase).
    """

    def __init__(
        self,
        kind: str,
        phase: str,
        *,
        type_name: str = "",
        message: str = "",
        signal_name: str = "",
        environment: bool = False,
        expected: bool = True,
        limits: Limits = Limits(),
    ) -> None:
        self.kind, self.phase, self.type_name, self.message = kind, phase, type_name, message
        self.signal_name, self.environment, self.limits = signal_name, environment, limits
        self.expected = expected
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: what happened, and while doing what."""
        if self.kind == "exception":
            where = "" if self.expected else f" (while {self.phase})"
            return f"{self.type_name}: {self.message}{where}"
        if self.kind == "memory":
            limit = self.limits.memory_mb
            cap = f" of {limit:g} MB" if limit else ""
            return f"ran out of memory (limit{cap}) while {self.phase}"
        if self.kind == "timeout":
            return f"took longer than {self.limits.seconds:g} s while {self.phase}; stopped"
        if self.kind == "signal":
            hint = " (out of memory?)" if self.signal_name == "SIGKILL" else ""
            return f"crashed with {self.signal_name}{hint} while {self.phase}"
        return f"stopped without a result ({self.message}) while {self.phase}"


def available() -> bool:
    """True where children can be forked (Linux, macOS)."""
    return hasattr(os, "fork") and sys.platform != "win32"


def phase(name: str) -> None:
    """Say what the current work is doing (``"loading"``, ``"exporting"``...): sent to the
    parent from a child, remembered in-process; failures name the last phase."""
    global _phase
    _phase = name
    if _child_fd is not None:
        _send({"phase": name})


def current_phase() -> str:
    return _phase


def _send(message: dict[str, Any], *, hold: bool = False) -> None:
    """Write one JSON line to the parent, after any held ones; ``hold`` keeps it for the next
    call (for a message nothing can happen after before the next one is sent)."""
    _pending.extend((json.dumps(message, allow_nan=True, default=str) + "\n").encode())
    if hold:
        return
    view = memoryview(bytes(_pending))
    _pending.clear()
    while view:
        view = view[os.write(_child_fd, view) :]


_prctl: Any = None


def _prepare_prctl() -> None:
    """Look up libc's prctl once, in the parent (Linux only)."""
    global _prctl
    if _prctl is None:
        try:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else False
        except (OSError, AttributeError):
            _prctl = False


def _die_with_parent() -> None:
    """Linux: SIGKILL this child when its parent dies (prctl PR_SET_PDEATHSIG)."""
    if _prctl:
        with contextlib.suppress(Exception):
            _prctl(1, signal.SIGKILL, 0, 0, 0)


def _memory() -> tuple[int, int] | None:
    """This process's mapped address space and resident memory (bytes), or None where they
    cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            fields = fh.read().split()
        page = os.sysconf("SC_PAGE_SIZE")
        return int(fields[0]) * page, int(fields[1]) * page
    except (OSError, ValueError, IndexError):
        return None


def _address_space_bytes() -> int | None:
    """This process's mapped address space (bytes), or None where it cannot be read."""
    memory = _memory()
    return None if memory is None else memory[0]


def resident_mb() -> float | None:
    """This process's resident memory (MB), or None where it cannot be read."""
    memory = _memory()
    return None if memory is None else memory[1] / 2**20


def _flush_logging() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    _flush_std()


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


# ------------------------------------------------------------------------------ logging
def _log_handlers() -> list[logging.Handler]:
    """Every handler of every logger (root first), once each; NullHandlers left out."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if not isinstance(handler, logging.NullHandler):
                found.setdefault(id(handler), handler)
    return list(found.values())


class _Forward(logging.Handler):
    """In a child, stands in for the parent's handler number ``index``: sends each record it
    would handle to the parent, which hands it to that handler once the item's outcome is
    known (and drops it with an attempt that is run again)."""

    def __init__(self, index: int, real: logging.Handler) -> None:
        super().__init__(real.level)
        self.index, self.real = index, real
        self.filters = list(real.filters)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {
                key: value
                for key, value in vars(record).items()
                if isinstance(value, str | int | float | bool) or value is None
            }
            fields.update(msg=record.getMessage(), args=None, exc_info=None)
            if record.exc_info and not record.exc_text:
                formatter = self.real.formatter or logging.Formatter()
                fields["exc_text"] = formatter.formatException(record.exc_info)
            _send({"log": [self.index, fields]})
        except Exception:  # noqa: BLE001 - as logging does: report, go on
            self.handleError(record)


def _forward_logging(handlers: Sequence[logging.Handler]) -> None:
    """In a child: put a :class:`_Forward` in place of each of ``handlers``, wherever used."""
    proxies = {id(h): _Forward(i, h) for i, h in enumerate(handlers)}
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if getattr(logger, "handlers", None):
            logger.handlers = [proxies.get(id(h), h) for h in logger.handlers]


def _emit(records: Sequence[Any], handlers: Sequence[logging.Handler]) -> None:
    """In the parent: hand a child's forwarded records to the handlers they were meant for."""
    for index, fields in records:
        with contextlib.suppress(Exception):
            handlers[index].handle(logging.makeLogRecord(fields))


# ------------------------------------------------------------------------------- worker
@dataclass(frozen=True)
class _Work:
    """What every worker of one :func:`run_each_isolated` call does (see its arguments)."""

    fn: Callable[[Any], Any]
    items: Sequence[Any]
    encode: Callable[[Any], Any]
    is_environment: Callable[[BaseException, str], bool]
    is_expected: Callable[[BaseException], bool]
    start_phase: str
    per_child: int | None


def _worker(
    work: _Work,
    first: int,
    limits: Sequence[Limits],
    base: int | None,
    handlers: Sequence[logging.Handler],
    write_fd: int,
) -> None:
    """A worker's whole life (never returns): set itself up, then for each item from
    ``first`` on: set its memory limit, say ``start``, ``fn(item)``, send the result. It exits
    after an item that fails (reporting why), after ``per_child`` items, once it has grown too
    much (see :data:`RESTART_GROWTH`), or after the last item."""
    global _child_fd, _phase
    items, per_child = work.items, work.per_child
    code = 0
    try:
        _child_fd = write_fd
        if faulthandler.is_enabled():  # a crash is reported by the parent, in one line
            faulthandler.disable()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with_parent()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _forward_logging(handlers)
        once = dict(warnings.onceregistry)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft: int | None = -1
        forked = _memory()
        done = 0
        for k in range(first, len(items)):
            memory_mb = limits[k].memory_mb
            if done and _grown_too_much(forked, memory_mb):
                break  # retire: a fresh worker takes over at item k
            wanted = None if base is None or memory_mb is None else base + int(memory_mb * 2**20)
            if wanted != soft:
                cap = hard if wanted is None else wanted
                if hard != resource.RLIM_INFINITY:
                    cap = min(cap, hard)
                resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
                soft = wanted
            _phase = work.start_phase
            _send({"start": k, "at": time.monotonic()})
            with warnings.catch_warnings():  # filters as forked; "already shown" forgotten
                warnings.onceregistry.clear()
                warnings.onceregistry.update(once)
                result = work.fn(items[k])
            _flush_std()
            done += 1
            last = k + 1 == len(items) or (per_child is not None and done >= per_child)
            _send({"result": work.encode(result)}, hold=not last)
            if last:
                break
    except MemoryError:
        code = 3
        with contextlib.suppress(BaseException):
            _send({"memory": _phase})
    except BaseException as exc:  # anything at all: reported, never re-raised
        code = 2
        with contextlib.suppress(BaseException):
            text = " ".join((str(exc).strip() or "(no message)").split())
            report = {
                "type": type(exc).__name__,
                "message": text,
                "phase": _phase,
                "environment": bool(work.is_environment(exc, _phase)),
                "expected": bool(work.is_expected(exc)),
            }
            if not isinstance(exc, Exception) or report["environment"]:
                report["traceback"] = "".join(traceback.format_exception(exc))[-4000:]
            _send({"error": report})
    finally:
        with contextlib.suppress(BaseException):
            if _pending:
                _send({})  # a held result still goes out
        _flush_logging()
        os._exit(code)


def _grown_too_much(forked: tuple[int, int] | None, memory_mb: float | None) -> bool:
    """Whether this worker grew (address space or resident memory, since ``forked``) by more
    than :data:`RESTART_GROWTH` of ``memory_mb`` (or :data:`RESTART_GROWTH_MB`)."""
    now = _memory()
    if forked is None or now is None:
        return False
    allowed = RESTART_GROWTH_MB if memory_mb is None else RESTART_GROWTH * memory_mb
    grown = max(now[0] - forked[0], now[1] - forked[1]) / 2**20
    return grown > allowed


class _Timeout(Exception):
    pass


class _Worker:
    """The parent's side of one worker: fork it, read its messages, stop it."""

    def __init__(self, work: _Work, first: int, limits: Sequence[Limits]) -> None:
        _flush_logging()
        _prepare_prctl()
        base = None
        if any(lim.memory_mb is not None for lim in limits[first:]):
            base = _address_space_bytes()
        self.handlers = _log_handlers()
        gc.freeze()  # the child's allocations never make it walk (and copy) the parent's objects
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read_fd)
            _worker(work, first, limits, base, self.handlers, write_fd)
        os.close(write_fd)
        self.pid, self.fd, self.status = pid, read_fd, None
        self.lines: deque[bytes] = deque()
        self.partial = bytearray()
        self.skipping = False  # inside a line longer than _MAX_REPORT_BYTES
        self.eof = False

    def message(self, deadline: float | None) -> dict[str, Any] | None:
        """The next message (None at the end of the pipe: the worker is gone); raises
        :class:`_Timeout` at ``deadline`` (``time.monotonic()``)."""
        while not self.lines:
            if self.eof:
                return None
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                raise _Timeout
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                self.eof = True
                continue
            self._split(chunk)
        try:
            message = json.loads(self.lines.popleft())
        except ValueError:
            return {}
        return message if isinstance(message, dict) else {}

    def _split(self, chunk: bytes) -> None:
        *complete, rest = chunk.split(b"\n")
        for piece in complete:
            if not self.skipping:
                self.lines.append(bytes(self.partial + piece))
            self.partial.clear()
            self.skipping = False
        if not self.skipping:
            self.partial += rest
            if len(self.partial) > _MAX_REPORT_BYTES:
                self.partial.clear()
                self.skipping = True

    def wait(self) -> int:
        """Reap the worker (which has closed its pipe or been killed); its wait status."""
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)
        return self.status

    def stop(self) -> None:
        """Kill the worker if it still runs, reap it, close the pipe."""
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class _Outcome:
    """What became of one item in a worker: ``result`` (JSON), or ``failure``; ``started``
    is False when the worker ended before saying it started the item."""

    started: bool
    records: list[Any]
    phase: str
    result: Any = None
    failure: ChildFailure | None = None


def _next_outcome(worker: _Worker, k: int, limits: Limits, start_phase: str) -> _Outcome:
    """Read the worker's messages until item ``k`` has a result or the worker is gone."""
    started, records, last_phase = False, [], start_phase
    error = memory = None
    deadline = None if limits.seconds is None else time.monotonic() + limits.seconds
    while True:
        try:
            message = worker.message(deadline)
        except _Timeout:
            worker.stop()
            failure = ChildFailure("timeout", last_phase, limits=limits)
            return _Outcome(started, records, last_phase, failure=failure)
        if message is None:
            status = worker.wait()
            failure = _failure(status, last_phase, error, memory, limits)
            return _Outcome(started, records, failure.phase, failure=failure)
        if "start" in message:
            started, last_phase = True, start_phase
            if limits.seconds is not None:
                at = message.get("at")
                at = at if isinstance(at, float) and at <= time.monotonic() else time.monotonic()
                deadline = at + limits.seconds
        elif "phase" in message:
            last_phase = str(message["phase"])
        elif "log" in message:
            records.append(message["log"])
        elif "result" in message and started:
            return _Outcome(True, records, last_phase, result=message["result"])
        elif "error" in message and isinstance(message["error"], dict):
            error = message["error"]
        elif "memory" in message:
            memory = str(message["memory"])


def _failure(
    status: int, last_phase: str, error: Any, memory: str | None, limits: Limits
) -> ChildFailure:
    """Why a worker that ended without the current item's result ended."""
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return ChildFailure("signal", last_phase, signal_name=name, limits=limits)
    if memory is not None:
        return ChildFailure("memory", memory, limits=limits)
    if error is not None:
        failure = ChildFailure(
            "exception",
            str(error.get("phase", last_phase)),
            type_name=str(error.get("type", "Exception")),
            message=str(error.get("message", "")),
            environment=bool(error.get("environment")),
            expected=bool(error.get("expected", True)),
            limits=limits,
        )
        if error.get("traceback"):
            failure.add_note(str(error["traceback"]))
        return failure
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return ChildFailure("no-report", last_phase, message=f"exit status {code}", limits=limits)


def run_each_isolated(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    limits: Callable[[int], Limits],
    encode: Callable[[Any], Any] = lambda value: value,
    is_environment: Callable[[BaseException, str], bool] = lambda exc, phase: False,
    is_expected: Callable[[BaseException], bool] = lambda exc: True,
    start_phase: str | None = None,
    per_child: int | None = None,
    warm_up: Callable[[], None] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(k, encode(fn(items[k])))`` for every item in order, or ``(k, failure)`` (a
    :class:`ChildFailure`) for an item whose work raised, crashed, or ran out of memory or
    time; the work runs in forked workers (see the module docstring), item ``k`` under
    ``limits(k)`` (asked when a worker that may take item ``k`` is forked).

    Each item's work starts in phase ``start_phase`` (default: the current one). A worker
    takes at most ``per_child`` items (None: no limit; 1: a child per item). ``warm_up`` runs
    in this process before it forks any worker but the first (the imports the work needs, so
    that later workers start with them; the first pays them itself, as work in-process
    would); a failure in the first worker is then judged again by a warm one, timeouts
    included. When a failure is yielded its worker is already gone. Close the generator to stop
    its worker early. ``is_environment(exc, phase)`` and ``is_expected(exc)`` (called in the
    worker) classify an exception (see :class:`ChildFailure`).
    """
    global _phase
    start_phase = _phase if start_phase is None else start_phase
    known: dict[int, Limits] = {}

    def limits_of(i: int) -> Limits:
        if i not in known:
            known[i] = limits(i)
        return known[i]

    work = _Work(fn, items, encode, is_environment, is_expected, start_phase, per_child)
    warm, forked, k = warm_up is None, 0, 0
    while k < len(items):
        if forked and not warm:
            warm_up()
            warm = True
            known.clear()  # derived limits depend on what this process now holds
        first, cold = k, not warm
        table = [limits_of(i) if i >= first else Limits() for i in range(len(items))]
        worker = _Worker(work, first, table)
        forked += 1
        try:
            while k < len(items):
                outcome = _next_outcome(worker, k, table[k], start_phase)
                if outcome.failure is None:
                    _emit(outcome.records, worker.handlers)
                    _phase = outcome.phase
                    yield k, outcome.result
                    k += 1
                    continue
                failure = outcome.failure
                worker.stop()
                if (k > first or cold) and (not outcome.started or _run_again(failure, cold)):
                    break  # item k again, in a fresh worker: only that verdict counts
                _emit(outcome.records, worker.handlers)
                _phase = failure.phase
                yield k, failure
                k += 1
                break
        finally:
            worker.stop()


def _run_again(failure: ChildFailure, cold: bool) -> bool:
    """Whether an item that failed in a used or cold worker is run again in a fresh one:
    always, except after an environment fault (the job fails) or a timeout in a warm worker
    (it would cost its time again)."""
    return not failure.environment and (cold or failure.kind != "timeout")


def run_isolated(
    fn: Callable[[], Any],
    *,
    limits: Limits = Limits(),
    encode: Callable[[Any], Any] = lambda value: value,
    decode: Callable[[Any], Any] = lambda value: value,
    is_environment: Callable[[BaseException, str], bool] = lambda exc, phase: False,
    is_expected: Callable[[BaseException], bool] = lambda exc: True,
) -> Any:
    """``decode(encode(fn()))``, with ``fn`` run in a forked child of its own under ``limits``.

    ``encode`` turns the result into JSON-able data in the child, ``decode`` turns that back
    in the parent. Raises :class:`ChildFailure` when the child raises, crashes, runs out of
    memory or time. ``is_environment(exc, phase)`` and ``is_expected(exc)`` (called in the
    child) classify an exception (see :class:`ChildFailure`).
    """
    runs = run_each_isolated(
        lambda _: fn(),
        [None],
        limits=lambda _: limits,
        encode=encode,
        is_environment=is_environment,
        is_expected=is_expected,
    )
    with contextlib.closing(runs):
        ((_, outcome),) = list(runs)
    if isinstance(outcome, ChildFailure):
        raise outcome
    return decode(outcome)
