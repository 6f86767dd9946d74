"""Load user code the config names as ``module:function`` (a .py file or a module)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError


def load_function(
    spec: str, key: str, base: Path | None = None, error: type[Exception] = ConfigError
) -> Callable[..., Any]:
    """The function ``spec`` names: ``file.py:function`` or ``module:function``.

    Args:
        spec: ``module:function``; the module part may be a path to a .py file.
        key: The config key, for error messages.
        base: Folder that a relative .py path (or ``name`` with a ``name.py`` there) is in.
        error: The exception type to raise.

    Raises:
        error: ``spec`` is malformed, the module cannot be imported, or has no such function.
    """
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise error(f"{key}: {spec!r} is not module:function (e.g. my_rewards:score)")
    file = Path(module_name if module_name.endswith(".py") else f"{module_name}.py")
    if not file.is_absolute() and base is not None:
        file = base / file
    try:
        if file.is_file():
            loader = importlib.util.spec_from_file_location(file.stem, file)
            assert loader is not None and loader.loader is not None
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as err:  # the user's module: any import error is theirs to fix
        raise error(f"{key}: cannot import {module_name!r}: {err}") from err
    function = getattr(module, function_name, None)
    if not callable(function):
        raise error(f"{key}: {module_name!r} has no function {function_name!r}")
    return function
