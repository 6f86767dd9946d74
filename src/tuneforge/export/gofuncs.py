"""Go ``text/template`` value semantics and builtin functions, for :mod:`gotemplate`.

Truth, printing, field access and the builtins ``and``, ``or``, ``not``, ``eq``, ``ne``,
``len``, ``index`` and ``slice`` behave as in Go's ``text/template`` with Ollama's
``missingkey=zero``: a ``dict`` is a Go map (a missing key is nil), any other object a
struct whose fields are its attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NO_VALUE = "<no value>"


class GoTemplateError(ValueError):
    """The template is outside the supported subset, malformed, or fails on the data."""


def field(value: Any, name: str) -> Any:
    """``value.name``: a map key (nil when missing) or a struct field (an error when missing)."""
    if isinstance(value, dict):
        return value.get(name)
    if value is None:
        raise GoTemplateError(f"nil pointer evaluating interface {{}}.{name}")
    if not hasattr(value, name) or isinstance(value, str | int | float | list | tuple):
        raise GoTemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
    return getattr(value, name)


def truth(value: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings, lists and maps are false."""
    if value is None or isinstance(value, bool | int | float | str | list | tuple | dict):
        return bool(value)
    return True


def format_value(value: Any) -> str:
    """A value as Go's ``fmt.Print`` writes it (for the kinds templates print)."""
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(format_value(v) for v in value) + "]"
    if isinstance(value, int | str):
        return str(value)
    raise GoTemplateError(f"printing a {type(value).__name__} is outside the supported subset")


def call(name: str, thunks: list[Callable[[], Any]]) -> Any:
    """Call a builtin; ``and``/``or`` evaluate their arguments lazily, left to right."""
    if name in ("and", "or"):
        if not thunks:
            raise GoTemplateError(f"wrong number of args for {name}: want at least 1 got 0")
        value = None
        for thunk in thunks:
            value = thunk()
            if truth(value) != (name == "and"):
                return value
        return value
    builtin = _BUILTINS.get(name)
    if builtin is None:
        raise GoTemplateError(f'function "{name}" not defined')
    args = [thunk() for thunk in thunks]
    try:
        return builtin(*args)
    except TypeError:  # the builtins' signatures are Go's, so this is an argument count
        raise GoTemplateError(f"wrong number of args for {name}: got {len(args)}") from None


def _kind(value: Any) -> str:
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("string", str)):
        if isinstance(value, types):
            return kind
    return "nil" if value is None else type(value).__name__


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise GoTemplateError("missing argument for comparison")
    for other in others:
        if _kind(first) != _kind(other):
            raise GoTemplateError(
                f"incompatible types for comparison: {_kind(first)}, {_kind(other)}"
            )
        if isinstance(first, list | dict):
            raise GoTemplateError(f"non-comparable type {_kind(first)}")
        if first == other:
            return True
    return False


def _len(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())  # Go counts bytes
    if isinstance(value, list | tuple | dict):
        return len(value)
    raise GoTemplateError(f"len of type {_kind(value)}")


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list | tuple) and _kind(key) == "int":
            if not 0 <= key < len(value):
                raise GoTemplateError(f"index out of range: {key}")
            value = value[key]
        else:
            raise GoTemplateError(f"can't index item of type {_kind(value)}")
    return value


def _slice(value: Any, *bounds: int) -> Any:
    if not isinstance(value, list | tuple | str) or len(bounds) > 2:
        raise GoTemplateError(f"can't slice item of type {_kind(value)}")
    if any(_kind(bound) != "int" for bound in bounds):
        raise GoTemplateError("cannot index slice/array with a non-integer")
    size = _len(value)
    low, high = (list(bounds) + [0, size][len(bounds) :])[:2]
    if not 0 <= low <= high <= size:
        raise GoTemplateError(f"slice index out of range: {low}:{high} of {size}")
    if isinstance(value, str):
        return value.encode()[low:high].decode()
    return list(value[low:high])


def _not(value: Any) -> bool:
    return not truth(value)


_BUILTINS: dict[str, Callable[..., Any]] = {
    "not": _not,
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "len": _len,
    "index": _index,
    "slice": _slice,
}
