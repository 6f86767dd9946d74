"""The adapters a server can put on its base model: a folder of named LoRA adapters.

Layout::

    root/
      support-v3/            a name: a flat PEFT folder (adapter_config.json and
        adapter_config.json  adapter_model.safetensors), as tuneforge saves adapters
        adapter_model.safetensors
      legal/ ...
      aliases.json           optional: {"support": "support-v3"}; read on every lookup

A name (or alias) passes :func:`tuneforge.train.adapters.check_adapter_name` (letters,
digits, ``_`` and ``-``: no ``..``, no ``/``, no absolute path), and its folder and files,
symlinks followed, must lie inside the root. A name that fails is refused with
:class:`InvalidAdapter` (a ``ValueError``: the app answers 400); a name with no such
folder, or whose folder resolves outside the root, with :class:`UnknownAdapter` (404).

Only plain LoRA adapters are served: they are the kind PEFT can mix in one batch
(``adapter_names``). Other kinds (DoRA, IA3, prompt or prefix tuning) are refused with
:class:`InvalidAdapter`; merge them into a base model and serve that instead.

Loaded adapters are bounded: loading one more than ``max_loaded`` unloads the least
recently used adapter that no running request holds. An adapter's ``version`` (sha256
of its config and weights) keys the response cache, and a changed version makes the
next load replace the loaded copy.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError, ModelError
from tuneforge.serve.types import UnknownAdapter
from tuneforge.train.adapters import ADAPTER_FILES, check_adapter_name, load_adapters

ALIASES_FILE = "aliases.json"
NAME_FILE = "fine_tuned_model.txt"  # optional: the adapter's ft: name (tuneforge service)


def fine_tuned_name(base: str, suffix: str | None, adapter: str) -> str:
    """``ft:<base>:<suffix>:<adapter>``: how a fine-tuning job's adapter is named."""
    return f"ft:{base}:{suffix or ''}:{adapter}"


def parse_fine_tuned(name: str) -> tuple[str, str, str] | None:
    """``(base, suffix, adapter)`` of an ``ft:`` name; None for any other name."""
    if not name.startswith("ft:"):
        return None
    rest, _, adapter = name[3:].rpartition(":")
    base, sep, suffix = rest.rpartition(":")
    return (base, suffix, adapter) if sep and base and adapter else None


class InvalidAdapter(ConfigError, ValueError):
    """The adapter name, alias or folder is refused: answer 400."""


class AdapterSlotsBusy(RuntimeError):
    """Every loaded adapter is held by a running request: retry once one finishes."""


@dataclass(frozen=True)
class AdapterRef:
    """A resolved adapter: its registry name, folder and content version."""

    name: str
    path: Path
    version: str


class AdapterRegistry:
    """Named LoRA adapters under ``root``, at most ``max_loaded`` of them on the model.

    Lookups (``names``, ``resolve``) may come from any thread; ``load`` and ``unload``
    change the model and belong to the thread that runs it.

    Args:
        root: The registry folder.
        max_loaded: Most adapters on the model at once (least recently used unload first).

    Raises:
        ModelError: ``root`` is not a folder.
        ValueError: ``max_loaded`` below 1.
    """

    def __init__(self, root: str | Path, max_loaded: int = 8) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise ModelError(f"adapter registry {str(root)!r}: directory not found")
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be at least 1, got {max_loaded}")
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, AdapterRef] = OrderedDict()  # least recent first
        self._versions: dict[Path, tuple[tuple, str]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Adapter names: folders under the root that hold a servable adapter, sorted."""
        found = []
        for folder in sorted(self.root.iterdir()):
            try:
                self._folder(_check_name(folder.name, "adapter"))
            except (InvalidAdapter, UnknownAdapter):
                continue
            found.append(folder.name)
        return found

    def model_names(self, base: str) -> list[str]:
        """The names clients use: ``base:adapter`` for each adapter and alias, or the
        ``ft:`` name a fine-tuning job gave its adapter (its ``fine_tuned_model.txt``)."""
        names = []
        for adapter in self.names():
            label = self.root / adapter / NAME_FILE
            names.append(label.read_text().strip() if label.is_file() else f"{base}:{adapter}")
        return names + [f"{base}:{alias}" for alias in sorted(self.aliases())]

    def resolve_model(self, base: str, model: str) -> str:
        """The adapter a request's ``model`` names: ``base:adapter``, an adapter or alias
        alone, or an adapter's ``ft:`` name (in full: a wrong base or suffix is unknown).

        Raises:
            InvalidAdapter, UnknownAdapter: as :meth:`resolve`.
        """
        parsed = parse_fine_tuned(model)
        if parsed is None:
            return self.resolve(model.removeprefix(f"{base}:")).name
        ref = self.resolve(parsed[2])
        label = ref.path / NAME_FILE
        if not label.is_file() or label.read_text().strip() != model:
            raise UnknownAdapter(f"model {model!r}: no such fine-tuned model")
        return ref.name

    def aliases(self) -> dict[str, str]:
        """Alias -> adapter name, from ``aliases.json`` (empty when there is none).

        Raises:
            InvalidAdapter: the file is not a JSON object of safe names, or an alias is
                also a folder name.
        """
        path = self.root / ALIASES_FILE
        if not path.is_file():
            return {}
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InvalidAdapter(f"{path}: not readable JSON: {err}") from None
        if not isinstance(mapping, dict):
            raise InvalidAdapter(f"{path}: expected an object of alias -> adapter name")
        for alias, target in mapping.items():
            _check_name(alias, f"{path}: alias")
            _check_name(target, f"{path}: target of alias {alias!r}")
            if (self.root / alias).exists():
                raise InvalidAdapter(f"{path}: alias {alias!r} is also a folder; rename one")
        return dict(mapping)

    def resolve(self, name: str) -> AdapterRef:
        """The adapter a name or alias stands for.

        Raises:
            InvalidAdapter: an unsafe name, or a folder that is not a servable LoRA adapter.
            UnknownAdapter: no such adapter inside the root.
        """
        _check_name(name, "adapter")
        target = self.aliases().get(name, name)
        folder = self._folder(target)
        return AdapterRef(target, folder, self._version(folder))

    def loaded(self) -> list[str]:
        """Names of the adapters on the model, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def load(self, model: Any, name: str, *, held: Collection[str] = ()) -> tuple[Any, AdapterRef]:
        """Put adapter ``name`` on ``model`` (if not there in this version) and mark it used.

        Args:
            model: The base model, plain or already carrying adapters.
            name: Adapter name or alias.
            held: Loaded adapters that running requests use: never unloaded here.

        Returns:
            The model to use from now on (a PEFT model once one adapter is loaded) and the
            adapter's reference.

        Raises:
            InvalidAdapter, UnknownAdapter: as :meth:`resolve`.
            AdapterSlotsBusy: ``max_loaded`` adapters are loaded and all are held.
        """
        ref = self.resolve(name)
        current = self._loaded.get(ref.name)
        if current is not None and (current.version == ref.version or ref.name in held):
            with self._lock:
                self._loaded.move_to_end(ref.name)
            return model, current
        if current is not None:  # a new version on disk: replace the loaded copy
            model = self.unload(model, ref.name)
        while len(self._loaded) >= self.max_loaded:
            victim = next((n for n in self._loaded if n not in held), None)
            if victim is None:
                raise AdapterSlotsBusy(
                    f"adapter {ref.name!r}: all {self.max_loaded} adapter slots are in use"
                )
            model = self.unload(model, victim)
        try:
            model = load_adapters(model, {ref.name: ref.path})
        except (RuntimeError, ValueError, KeyError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ModelError(
                f"adapter {ref.name!r}: does not fit the base model: {first}"
            ) from None
        model.eval()
        with self._lock:
            self._loaded[ref.name] = ref
        return model, ref

    def unload(self, model: Any, name: str) -> Any:
        """Take adapter ``name`` off ``model``; returns the model to use from now on.

        The last adapter's unload returns the plain base model (PEFT models cannot run
        with no adapter at all).
        """
        with self._lock:
            if self._loaded.pop(name, None) is None:
                return model
            last = not self._loaded
        if last:
            return model.unload()
        model.delete_adapter(name)
        return model

    def _folder(self, name: str) -> Path:
        """The checked folder of adapter ``name`` (not an alias)."""
        folder = self.root / name
        if not folder.is_dir():
            raise UnknownAdapter(f"adapter {name!r}: not in the adapter registry")
        for path in (folder, *(folder / file for file in ADAPTER_FILES)):
            if not path.resolve().is_relative_to(self.root):
                raise UnknownAdapter(
                    f"adapter {name!r}: {path.name} resolves outside the adapter registry; refused"
                )
        missing = [file for file in ADAPTER_FILES if not (folder / file).is_file()]
        if missing:
            raise InvalidAdapter(f"adapter {name!r}: no {', '.join(missing)} in its folder")
        _check_lora(folder / "adapter_config.json", name)
        return folder.resolve()

    def _version(self, folder: Path) -> str:
        """sha256 of the config and weights; recomputed only when a file's stat changes."""
        files = [folder / file for file in ADAPTER_FILES]
        stamp = tuple((s.st_size, s.st_mtime_ns, s.st_ino) for s in (f.stat() for f in files))
        cached = self._versions.get(folder)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        digest = hashlib.sha256()
        for file in files:
            with open(file, "rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(block)
        self._versions[folder] = (stamp, digest.hexdigest())
        return digest.hexdigest()


def _check_name(name: Any, key: str) -> str:
    """``name`` if it is a safe adapter name, else InvalidAdapter naming ``key``."""
    try:
        return check_adapter_name(name, key)
    except ConfigError as err:
        raise InvalidAdapter(str(err)) from None


def _check_lora(config_file: Path, name: str) -> None:
    """Refuse adapters PEFT cannot mix in one batch (anything but plain LoRA)."""
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InvalidAdapter(f"adapter {name!r}: {config_file.name} unreadable: {err}") from None
    kind = str(config.get("peft_type", "?"))
    if kind != "LORA" or config.get("use_dora"):
        what = "DoRA" if kind == "LORA" else kind
        raise InvalidAdapter(
            f"adapter {name!r}: a {what} adapter; the local engine serves LoRA adapters only "
            "(merge it into the base with `tuneforge export` and serve that)"
        )
