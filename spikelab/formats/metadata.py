"""Metadata and neuron attributes as JSON, the way every format stores what it has no field for."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["json_safe"]

_JSON_LEAVES = frozenset({str, int, float, bool, type(None)})


def json_safe(value: Any) -> Any:
    """Turn metadata/attributes into JSON-encodable values (numpy scalars and arrays to lists)."""
    # Plain leaves are kept without a call per item: attributes of 1000s of units are fast.
    if type(value) in _JSON_LEAVES:
        return value
    if isinstance(value, dict):
        return {str(k): v if type(v) in _JSON_LEAVES else json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [v if type(v) in _JSON_LEAVES else json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
