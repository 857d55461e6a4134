"""Metadata and neuron attributes as JSON, the way every format stores what it has no field for."""

from __future__ import annotations

from typing import Any

import numpy as np

from spikelab.formats.errors import ExportError

__all__ = ["json_safe", "MAX_JSON_DEPTH"]

_JSON_LEAVES = frozenset({str, int, float, bool, type(None)})

#: Deepest nesting of containers json_safe converts. ``json.dumps`` (which every exporter
#: calls on the result) recurses once per level and stops at the interpreter's recursion limit
#: (1000 by default); real metadata is a few levels deep.
MAX_JSON_DEPTH = 500


def _start(value: Any) -> tuple[Any, Any, bool]:
    """Convert one value: ``(converted, iterator over its items or None, items are pairs)``.

    A container is converted into an empty one, filled by :func:`json_safe` from the iterator.
    """
    if isinstance(value, dict):
        return {}, iter(value.items()), True
    if isinstance(value, list | tuple | set | frozenset):
        return [], iter(value), False
    if isinstance(value, np.ndarray):
        return _start(value.tolist())
    if isinstance(value, np.generic):  # as the Python value it stands for (bytes to text...)
        item = value.item()
        return (item, None, False) if type(item) in _JSON_LEAVES else _start(item)
    if isinstance(value, str | int | float | bool) or value is None:
        return value, None, False
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace"), None, False
    return str(value), None, False


def json_safe(value: Any) -> Any:
    """Turn metadata/attributes into JSON-encodable values (numpy scalars and arrays to lists).

    Dicts (keys as ``str(key)``), lists, tuples, sets and arrays become dicts and lists, numpy
    scalars Python numbers, bytes UTF-8 text, anything else ``str(value)``. Walks iteratively;
    nesting deeper than :data:`MAX_JSON_DEPTH` containers raises :class:`ExportError`.
    """
    # Plain leaves are kept without a call per item: attributes of 1000s of units are fast.
    if type(value) in _JSON_LEAVES:
        return value
    out, items, pairs = _start(value)
    if items is None:
        return out
    stack = [(out, items, pairs)]
    while stack:
        out, items, pairs = stack[-1]
        for item in items:
            if pairs:
                key, v = item
                if type(v) in _JSON_LEAVES:
                    out[str(key)] = v
                    continue
                child, child_items, child_pairs = _start(v)
                out[str(key)] = child
            else:
                if type(item) in _JSON_LEAVES:
                    out.append(item)
                    continue
                child, child_items, child_pairs = _start(item)
                out.append(child)
            if child_items is not None:
                if len(stack) >= MAX_JSON_DEPTH:
                    raise ExportError(
                        f"metadata nested deeper than {MAX_JSON_DEPTH} levels: flatten it (or "
                        "store the deep part as a JSON string) before exporting"
                    )
                stack.append((child, child_items, child_pairs))
                break
        else:
            stack.pop()
    return out
