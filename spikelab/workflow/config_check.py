"""Check the workflow config against its JSON schema and report every problem at once, one
line each: the key, the value seen and what is allowed (for an unknown key, the nearest known
one). Snakemake's own ``validate`` stops at the first problem and prints the whole schema and
config after it.

Like ``snakemake.utils.validate(config, schema, set_default=True)``, the check fills in the
schema's defaults, in place, at every level (a missing block gets its default, then the
defaults of the keys inside it, e.g. of every ``hdf5`` entry). Before that, a string ``null``,
``None`` or ``~`` where the schema allows null becomes null, and a string ``500``, ``1e3`` or
``true`` where the schema wants a number or a boolean and no text becomes one: ``--config``
parses the values inside a mapping (``inputs='{glob: null}'``, ``isolation='{memory_mb: 500}'``)
and every top-level value that is not a number or a boolean (``fs_Hz=null``) as strings.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from spikelab.formats.registry import all_formats
from spikelab.workflow import WorkflowConfigError

__all__ = ["NULL_WORDS", "load_schema", "check_config"]

#: Strings read as null where the schema allows null (YAML's null words, and Python's).
NULL_WORDS = frozenset({"null", "Null", "NULL", "~", "None"})
#: Strings read as true / false where the schema wants a boolean and no text (YAML's, Python's).
TRUE_WORDS = frozenset({"true", "True", "TRUE"})
FALSE_WORDS = frozenset({"false", "False", "FALSE"})
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_INTEGER = re.compile(r"[-+]?\d+")
#: Longest value shown in a message (characters of its repr).
MAX_SHOWN = 60

_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a text",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping (key: value)",
    "null": "null",
}


def load_schema(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON schema (YAML or JSON) at ``path``."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def check_config(
    config: MutableMapping[str, Any], schema: Mapping[str, Any] | str | os.PathLike
) -> list[str]:
    """Validate ``config`` against ``schema`` (a mapping or a path), fill in its defaults in
    place and return warnings (one line each) about keys that are valid but ignored.

    Raises :class:`~spikelab.workflow.WorkflowConfigError` listing every problem, one line
    each, when the config does not match the schema.
    """
    from jsonschema import Draft202012Validator

    if not isinstance(schema, Mapping):
        schema = load_schema(schema)
    _scalars_from_strings(config, schema, schema)
    as_written = copy.deepcopy(dict(config))
    validator = _with_defaults(Draft202012Validator)(schema)
    problems = _problems(validator.iter_errors(config), schema)
    if problems:
        raise WorkflowConfigError(
            f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in the config "
            "(config.yaml lists every option with its default):\n  " + "\n  ".join(problems)
        )
    return [
        warning
        for spec in all_formats()
        if isinstance(as_written.get(spec.name), Mapping)
        for warning in spec.option_warnings(as_written[spec.name])
    ]


# ------------------------------------------------------------------------------ defaults
def _with_defaults(validator_class):
    """``validator_class`` that sets each missing property to a copy of its schema default
    before checking the properties (what ``snakemake.utils.validate`` does, after the
    jsonschema FAQ), so that nested defaults are filled as the check descends."""
    from jsonschema import validators

    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, MutableMapping):
            for key, subschema in props.items():
                if "default" in subschema and key not in instance:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from check_properties(validator, props, instance, schema)

    return validators.extend(validator_class, {"properties": properties})


# ------------------------------------------------------------------------- the schema
def _resolve(root: Mapping[str, Any], schema: Any) -> dict[str, Any]:
    """``schema`` with a local ``$ref`` (``#/...``) replaced by what it names (the keywords
    beside the ``$ref``, such as ``default``, kept)."""
    if not isinstance(schema, Mapping):
        return {}
    schema = dict(schema)
    while isinstance(schema.get("$ref"), str):
        ref = schema.pop("$ref")
        if not ref.startswith("#/"):
            return schema
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        schema = {**target, **schema}
    return schema


def _child(root: Mapping[str, Any], schema: Mapping[str, Any], key: Any) -> dict[str, Any]:
    """The schema of ``key`` (a mapping key, or a list index) inside a value of ``schema``."""
    if isinstance(key, int):
        return _resolve(root, schema.get("items"))
    properties = schema.get("properties") or {}
    if key in properties:
        return _resolve(root, properties[key])
    return _resolve(root, schema.get("additionalProperties"))


def _schema_at(root: Mapping[str, Any], path: Iterable[Any]) -> dict[str, Any]:
    schema = _resolve(root, root)
    for key in path:
        schema = _child(root, schema, key)
    return schema


def _types(root: Mapping[str, Any], schema: Mapping[str, Any]) -> set[str]:
    """The JSON types ``schema`` accepts (an enum's by its values; alternatives together)."""
    if "enum" in schema:
        return {_json_type(v) for v in schema["enum"]}
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    if alternatives:
        return set().union(*(_types(root, _resolve(root, s)) for s in alternatives))
    types = schema.get("type")
    if types is None:
        return set()
    return {types} if isinstance(types, str) else set(types)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string" if isinstance(value, str) else "object"


def _scalar_from_string(text: str, types: set[str]) -> Any:
    """``text`` as the null, boolean or number the schema wants there, else ``text``.

    Only where the schema takes no text: ``--config`` passes the values inside a mapping
    (``isolation='{memory_mb: 500}'``) as strings."""
    if "null" in types and text in NULL_WORDS:
        return None
    if "string" in types:
        return text
    if "boolean" in types and text in TRUE_WORDS | FALSE_WORDS:
        return text in TRUE_WORDS
    if types & {"integer", "number"} and _NUMBER.fullmatch(text.strip()):
        number = float(text)
        if "integer" in types and number.is_integer() and _INTEGER.fullmatch(text.strip()):
            return int(text)
        if "number" in types and math.isfinite(number):
            return number
    return text


def _scalars_from_strings(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> None:
    """Replace, in place, every string that stands for the null, boolean or number the schema
    wants at its place (:func:`_scalar_from_string`)."""
    if isinstance(value, MutableMapping):
        keys: Iterable[Any] = list(value)
    elif isinstance(value, list):
        keys = range(len(value))
    else:
        return
    for key in keys:
        child = _child(root, schema, key)
        item = value[key]
        if isinstance(item, str):
            value[key] = _scalar_from_string(item, _types(root, child))
        else:
            _scalars_from_strings(item, child, root)


# ----------------------------------------------------------------------------- messages
def _show(value: Any) -> str:
    """A value as the user wrote it (YAML's null, true and false), shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _dotted(path: Sequence[Any]) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text or "(the config)"


def _or(parts: Sequence[str]) -> str:
    parts = list(dict.fromkeys(p for p in parts if p))
    if len(parts) < 2:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _sentence_part(description: str) -> str:
    """A schema description as part of a sentence: no final '.', a lower-case first word
    unless it is an acronym (``ISO``)."""
    text = " ".join(description.split()).rstrip(".")
    first = text.split(" ", 1)[0]
    if first[:1].isupper() and (len(first) == 1 or first[1:2].islower()):
        text = text[0].lower() + text[1:]
    return text


def _bounds(schema: Mapping[str, Any]) -> str:
    if "minimum" in schema and "maximum" in schema:
        return f" from {schema['minimum']} to {schema['maximum']}"
    bounds = [
        f"{sign} {schema[key]}"
        for key, sign in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        )
        if key in schema
    ]
    return (" " + " and ".join(bounds)) if bounds else ""


def _allowed(root: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """What ``schema`` allows, in words (``an integer >= 1``, ``one of 'ms', 's'``...)."""
    if "enum" in schema:
        return "one of " + ", ".join(_show(v) for v in schema["enum"])
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    if alternatives:
        return _or([_allowed(root, _resolve(root, s)) for s in alternatives])
    types = schema.get("type") or ("string" if "pattern" in schema else None)
    if types is None:
        return "what the schema allows"
    types = [types] if isinstance(types, str) else list(types)
    allowed = _or([_type_allowed(root, t, schema) for t in types if t != "null"])
    if "null" not in types:
        return allowed
    if not allowed:
        return "null"
    return f"{allowed} (or null)" if "," in allowed else f"{allowed} or null"


def _type_allowed(root: Mapping[str, Any], kind: str, schema: Mapping[str, Any]) -> str:
    if kind in ("integer", "number"):
        return _TYPE_WORDS[kind] + _bounds(schema)
    if kind == "string":
        if schema.get("description") and ("pattern" in schema or "not" in schema):
            text = _sentence_part(schema["description"])
        else:
            min_length = schema.get("minLength", 0)
            text = "a non-empty text" if min_length == 1 else "a text"
            if min_length > 1:
                text += f" of at least {min_length} characters"
            if "pattern" in schema:
                text += f" matching {schema['pattern']}"
        excluded = _resolve(root, schema.get("not")).get("enum")
        if excluded:
            text += " (not " + ", ".join(str(v) for v in excluded) + ")"
        return text
    if kind == "array":
        text = "a list"
        if schema.get("minItems") == 1:
            text = "a non-empty list"
        items = _resolve(root, schema.get("items"))
        if items:
            text += f" whose items are each {_allowed(root, items)}"
        if schema.get("uniqueItems"):
            text += " (no repeats)"
        return text
    return _TYPE_WORDS.get(kind, kind)


def _unknown_key(path: Sequence[Any], key: str, value: Any, known: Sequence[str]) -> str:
    where = _dotted([*path, key])
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{where}: unknown key (set to {_show(value)}); did you mean {close[0]!r}?"
    return f"{where}: unknown key (set to {_show(value)}); known keys here: {', '.join(known)}"


def _problems(errors: Iterable[Any], root: Mapping[str, Any]) -> list[str]:
    """One line per problem (one per key), in the order the check met them."""
    lines: dict[tuple[str, ...], str] = {}
    for error in errors:
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            known = list(error.schema.get("properties") or {})
            for key, value in error.instance.items():
                if key not in known:
                    lines.setdefault(
                        (*map(str, path), str(key)), _unknown_key(path, key, value, known)
                    )
        elif "propertyNames" in error.absolute_schema_path:  # a name, not a value, is wrong
            name = error.instance
            names = _resolve(root, _schema_at(root, path).get("propertyNames"))
            allowed = (
                _sentence_part(names["description"])
                if "description" in names
                else _allowed(root, names)
            )
            lines.setdefault(
                (*map(str, path), str(name)),
                f"{_dotted([*path, name])}: the name {_show(name)} is not {allowed}",
            )
        elif error.validator == "uniqueItems":
            lines.setdefault(
                (*map(str, path), "uniqueItems"),
                f"{_dotted(path)}: {_show(error.instance)} lists an item twice",
            )
        else:
            schema = _schema_at(root, path)
            lines.setdefault(
                tuple(map(str, path)),
                f"{_dotted(path)}: {_show(error.instance)} is not {_allowed(root, schema)}",
            )
    return list(lines.values())
