"""Run one function in a forked child process under memory and time limits, so that whatever
it meets (a crash, a memory bomb, a hang, an exception) ends with the child, not the caller.

The child is a ``fork`` of the caller: modules imported before the fork (numpy, h5py, pynwb,
matplotlib) are already loaded, so a child costs a few milliseconds, not an interpreter start.
It gets an address-space limit (``RLIMIT_AS``: what it inherited plus ``memory_mb``), no core
dumps, and dies with its parent (Linux). It reports its progress (:func:`phase`) and its
result as JSON lines on a pipe; the parent waits up to ``seconds`` and then kills it. Nothing
the child sends is unpickled: results cross as JSON only.

Used by :mod:`spikelab.jobs` to give every recording of a batch job its own child.
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Limits",
    "ChildFailure",
    "available",
    "phase",
    "current_phase",
    "resident_mb",
    "run_isolated",
]

_MAX_REPORT_BYTES = 16 << 20  # what a child may send back (results are small JSON)
_child_fd: int | None = None  # the pipe to the parent, in a child
_phase = "starting"


@dataclass(frozen=True)
class Limits:
    """Limits of one child: ``memory_mb`` (MB the child may allocate beyond the address space
    it inherits) and ``seconds`` (wall time); None for no limit."""

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


def _send(message: dict[str, Any]) -> None:
    data = (json.dumps(message, allow_nan=True, default=str) + "\n").encode()
    view = memoryview(data)
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


def _address_space_bytes() -> int | None:
    """This process's mapped address space (bytes), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def resident_mb() -> float | None:
    """This process's resident memory (MB), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _flush_logging() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _child(
    fn: Callable[[], Any],
    write_fd: int,
    address_space: int | None,
    encode: Callable[[Any], Any],
    is_environment: Callable[[BaseException, str], bool],
    is_expected: Callable[[BaseException], bool],
) -> None:
    """The child's whole life: limits, run ``fn``, report, ``os._exit`` (never returns)."""
    global _child_fd
    code = 0
    try:
        _child_fd = write_fd  # the phase is inherited from the parent
        gc.disable()  # short-lived: a collection would only copy pages shared with the parent
        if faulthandler.is_enabled():  # a crash is reported by the parent, in one line
            faulthandler.disable()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with_parent()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if address_space is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard != resource.RLIM_INFINITY:
                address_space = min(address_space, hard)
            resource.setrlimit(resource.RLIMIT_AS, (address_space, hard))
        result = fn()
        _send({"result": encode(result)})
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
                "environment": bool(is_environment(exc, _phase)),
                "expected": bool(is_expected(exc)),
            }
            if not isinstance(exc, Exception) or report["environment"]:
                report["traceback"] = "".join(traceback.format_exception(exc))[-4000:]
            _send({"error": report})
    finally:
        _flush_logging()
        os._exit(code)


def run_isolated(
    fn: Callable[[], Any],
    *,
    limits: Limits = Limits(),
    encode: Callable[[Any], Any] = lambda value: value,
    decode: Callable[[Any], Any] = lambda value: value,
    is_environment: Callable[[BaseException, str], bool] = lambda exc, phase: False,
    is_expected: Callable[[BaseException], bool] = lambda exc: True,
) -> Any:
    """``decode(encode(fn()))``, with ``fn`` run in a forked child under ``limits``.

    ``encode`` turns the result into JSON-able data in the child, ``decode`` turns that back
    in the parent. Raises :class:`ChildFailure` when the child raises, crashes, runs out of
    memory or time. ``is_environment(exc, phase)`` and ``is_expected(exc)`` (called in the
    child) classify an exception (see :class:`ChildFailure`).
    """
    global _phase
    _flush_logging()
    _prepare_prctl()
    started_in = _phase
    address_space = None
    if limits.memory_mb is not None:
        mapped = _address_space_bytes()
        if mapped is not None:
            address_space = mapped + int(limits.memory_mb * 2**20)
    gc.freeze()  # the child's allocations then never make it walk (and copy) the parent's objects
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        _child(fn, write_fd, address_space, encode, is_environment, is_expected)
    os.close(write_fd)
    deadline = None if limits.seconds is None else time.monotonic() + limits.seconds
    buffer = bytearray()
    timed_out = False
    try:
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([read_fd], [], [], wait)
            if not ready:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            if len(buffer) < _MAX_REPORT_BYTES:
                buffer += chunk
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    last_phase, result, error, memory = started_in, None, None, None
    got_result = False
    for line in bytes(buffer).splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "phase" in message:
            last_phase = str(message["phase"])
        elif "result" in message:
            result, got_result = message["result"], True
        elif "error" in message:
            error = message["error"]
        elif "memory" in message:
            memory = str(message["memory"])
    _phase = last_phase
    if timed_out:
        raise ChildFailure("timeout", last_phase, limits=limits)
    if got_result and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return decode(result)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise ChildFailure("signal", last_phase, signal_name=name, limits=limits)
    if memory is not None:
        raise ChildFailure("memory", memory, limits=limits)
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
        raise failure
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    raise ChildFailure("no-report", last_phase, message=f"exit status {code}", limits=limits)
