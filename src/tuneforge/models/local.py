"""Checks on local model folders that need no deep-learning imports (fast CLI errors)."""

from __future__ import annotations

from pathlib import Path

from tuneforge.errors import ModelError


def is_local(name_or_path: str) -> bool:
    """True when ``name_or_path`` names a local path rather than a hub id."""
    return Path(name_or_path).expanduser().exists() or name_or_path.startswith((".", "/", "~"))


def check_local_model_dir(path: str | Path) -> Path:
    """Check that a local model folder can be loaded safely.

    Raises:
        ModelError: the folder is missing, has no config, or has no safetensors weights.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelError(f"model.name_or_path {str(path)!r}: directory not found")
    if not (path / "config.json").is_file():
        raise ModelError(f"model.name_or_path {str(path)!r}: no config.json; not a model folder")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(
            p.name for p in path.glob("*.pt")
        )
        hint = f" (found {', '.join(pickled)}: pickle weights are refused)" if pickled else ""
        raise ModelError(
            f"model.name_or_path {str(path)!r}: no *.safetensors weights{hint}; convert with "
            "`model.save_pretrained(dir, safe_serialization=True)`"
        )
    return path
