"""The export stage: every requested format, each verified by a reader we did not write.

``export.formats`` picks from ``hf`` (merged safetensors), ``adapter``, ``gguf``,
``onnx`` and ``ollama``. Every format but the adapter is converted from the merged
folder; when ``hf`` itself is not requested that folder is written to a scratch
place and removed. With ``export.verify`` (the default) each artifact is loaded
back by an independent reader (transformers' GGUF loader, onnxruntime) and its
logits compared with the merged model's; a mismatch fails the stage.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.config.schema import Config
from tuneforge.console import say
from tuneforge.export.card import model_card
from tuneforge.export.hf import can_merge, write_adapter, write_merged
from tuneforge.runs.hashing import file_sha256

CHECKSUMS = "SHA256SUMS"
NEEDS_MERGED = ("hf", "gguf", "onnx", "ollama")


def export_model(
    config: Config,
    model_path: str,
    train_dir: Path,
    out_dir: Path,
    lineage: dict[str, Any],
) -> dict[str, Any]:
    """Write each format of ``export.formats`` into ``out_dir``, then the model card."""
    formats = set(config.export.formats)
    if "ollama" in formats:
        formats.add("gguf")  # the Modelfile runs a GGUF file
    summary: dict[str, Any] = {"formats": sorted(formats)}
    if "adapter" in formats:
        summary["adapter"] = write_adapter(config, train_dir, out_dir / "adapter")
    if formats & set(NEEDS_MERGED):
        if not can_merge(config):
            kind = config.method.kind
            summary["merged"] = f"skipped: a method.kind {kind!r} adapter has no weights to merge"
        else:
            _convert(config, model_path, train_dir, out_dir, formats, summary)
    if lineage.get("gates_overridden"):
        summary["gates_overridden"] = lineage["gates_overridden"]
    (out_dir / "README.md").write_text(model_card(config, lineage), encoding="utf-8")
    return summary


def _convert(
    config: Config,
    model_path: str,
    train_dir: Path,
    out_dir: Path,
    formats: set[str],
    summary: dict[str, Any],
) -> None:
    """Write the merged folder, then every format converted from it."""
    merged = out_dir / ("merged" if "hf" in formats else ".merged-scratch")
    say("merging the adapter into the base model")
    summary.update(write_merged(config, model_path, train_dir, merged))
    if "hf" in formats:
        summary["merged"] = "merged"
    verify = config.export.verify
    if "gguf" in formats:
        from tuneforge.export.gguf import verify_gguf, write_gguf

        summary["gguf"] = {}
        for quant in config.export.gguf_quants:
            target = out_dir / "gguf" / f"{config.name}-{quant}.gguf"
            say(f"writing {target.name}")
            found = write_gguf(merged, target, quant)
            found["file"] = str(target.relative_to(out_dir))
            if verify:
                found["verified"] = verify_gguf(target, merged)
            summary["gguf"][quant] = found
    if "onnx" in formats:
        from tuneforge.export.onnx import verify_onnx, write_onnx

        say("exporting to ONNX")
        with _quiet_exporter():
            found = write_onnx(merged, out_dir / "onnx")
        if verify:
            found["verified"] = verify_onnx(out_dir / "onnx", merged)
        summary["onnx"] = found
    if "ollama" in formats:
        from tuneforge.export.ollama import write_modelfile

        quant = config.export.gguf_quants[-1]
        gguf = f"gguf/{config.name}-{quant}.gguf"
        summary["ollama"] = str(write_modelfile(merged, out_dir, gguf).relative_to(out_dir))
    if "hf" not in formats:
        shutil.rmtree(merged)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """PyTorch's ONNX exporter warns about optional operators it skips; none concern us."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def write_checksums(out_dir: Path) -> Path:
    """``SHA256SUMS`` over every file of the export, in ``sha256sum -c`` format."""
    files = sorted(
        p
        for p in out_dir.rglob("*")
        if p.is_file() and p.name != CHECKSUMS and not _hidden(p, out_dir)
    )
    lines = [f"{file_sha256(p)}  {p.relative_to(out_dir)}" for p in files]
    target = out_dir / CHECKSUMS
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
