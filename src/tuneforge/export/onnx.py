"""ONNX export of the merged causal LM, verified by onnxruntime against transformers.

The graph is PyTorch's own exporter (``torch.onnx.export(dynamo=True)``: ``torch.export``
tracing, then onnxscript's translation and optimiser) over the merged model in fp32. It
takes ``input_ids``, ``attention_mask`` and ``position_ids`` (all int64, shape
``[batch, sequence]``, both axes dynamic) and returns ``logits`` (fp32,
``[batch, sequence, vocab]``). There is no KV cache: each call reads the whole
sequence, which suits scoring and short generations; ``position_ids`` are inputs so
that left-padded batches are positioned exactly as transformers' ``generate`` does.

The folder is self-contained: ``model.onnx`` (+ ``model.onnx.data``, the weights),
and the merged folder's tokenizer, chat template and configs, so
``AutoTokenizer.from_pretrained(onnx_dir)`` works on it alone.

:func:`verify_onnx` runs the graph with onnxruntime's CPU provider on left-padded
probe prompts of different lengths and compares it with the transformers model: every
real position's logits within :data:`LOGITS_TOLERANCE`, both against the same padded
batch and against each prompt run alone, and identical greedy tokens for
:data:`GREEDY_STEPS` steps.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from tuneforge.errors import ConfigError, StageFailed
from tuneforge.eval.generate import left_pad

ONNX_FILE = "model.onnx"
OPSET = 18
INPUTS = ("input_ids", "attention_mask", "position_ids")
# fp32 onnxruntime vs PyTorch differs by rounding only: measured 7.2e-7 on the tiny test
# model (hidden 64, 2 layers) and 4.1e-6 on a 105M-parameter one (hidden 1024, 8 layers);
# 1e-4 leaves room for bigger models' longer sums and still catches a wrong graph.
LOGITS_TOLERANCE = 1e-4
GREEDY_STEPS = 8
PROBE_PROMPTS = (
    "Hello.",
    "The parcel left the warehouse this morning and should arrive tomorrow.",
    "Summarise in one line: the shop opens at nine, closes at five, and is shut on "
    "Sundays and public holidays; returns are accepted within thirty days with a receipt.",
)
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".data")


class _Logits(torch.nn.Module):
    """The causal LM as a function of the three int64 inputs to its logits, without cache."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        )
        return out.logits


def write_onnx(merged_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Export the merged model to ``out_dir/model.onnx`` with its tokenizer beside it.

    Args:
        merged_dir: A merged Hugging Face causal-LM folder (safetensors and tokenizer).
        out_dir: Folder to write (created).

    Returns:
        A summary: file, exporter, opset, input and output names, bytes written.

    Raises:
        ConfigError: the ``export`` extra (onnx, onnxscript) is not installed.
        StageFailed: PyTorch's exporter cannot trace the model.
    """
    merged_dir, out_dir = Path(merged_dir), Path(out_dir)
    _require("onnxscript")
    model = _load_model(merged_dir, attention="eager")  # plain ops: no fused-attention export
    ids, mask = left_pad([[5, 6, 7, 8, 9, 10, 11, 12], [5, 6, 7, 8, 9]], 0, "cpu")
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    axes = {"input_ids": {0: batch, 1: sequence}}
    axes |= {name: {0: batch, 1: sequence} for name in INPUTS[1:]}
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ONNX_FILE
    try:
        with torch.no_grad():
            torch.onnx.export(
                _Logits(model).eval(),
                (ids, mask, positions(mask)),
                str(target),
                input_names=list(INPUTS),
                output_names=["logits"],
                dynamic_shapes=axes,
                opset_version=OPSET,
                dynamo=True,
                external_data=True,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many types; the message is what matters
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StageFailed(f"torch.onnx.export could not export {merged_dir}: {first}") from None
    copied = _copy_side_files(merged_dir, out_dir)
    written = sorted(p.name for p in out_dir.iterdir() if p.name.startswith(ONNX_FILE))
    return {
        "file": ONNX_FILE,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "opset": OPSET,
        "inputs": list(INPUTS),
        "outputs": ["logits"],
        "kv_cache": False,
        "bytes": sum((out_dir / name).stat().st_size for name in written),
        "files": written + copied,
    }


def verify_onnx(onnx_dir: Path, merged_dir: Path) -> dict[str, Any]:
    """Check the ONNX graph against the merged model with onnxruntime (CPU, fp32).

    Args:
        onnx_dir: The folder :func:`write_onnx` wrote; its own tokenizer is used.
        merged_dir: The merged Hugging Face folder it was exported from.

    Returns:
        The measured numbers: the largest absolute logit difference on the padded batch
        and against each prompt alone, the tolerance, prompt lengths, greedy steps.

    Raises:
        StageFailed: a difference above :data:`LOGITS_TOLERANCE`, or a greedy token that
            differs.
    """
    onnx_dir, merged_dir = Path(onnx_dir), Path(merged_dir)
    session = _session(onnx_dir / ONNX_FILE)
    tokenizer = AutoTokenizer.from_pretrained(str(onnx_dir))
    model = _load_model(merged_dir)
    encoded = [tokenizer(p)["input_ids"] for p in PROBE_PROMPTS]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = left_pad(encoded, pad, "cpu")
    padded_diff, alone_diff = _logit_diffs(session, model, encoded, ids, mask)
    if not (padded_diff <= LOGITS_TOLERANCE and alone_diff <= LOGITS_TOLERANCE):  # or NaN
        worst = alone_diff if padded_diff <= LOGITS_TOLERANCE else padded_diff
        raise StageFailed(
            f"ONNX logits differ from the merged model by {worst:.2e} "
            f"(tolerance {LOGITS_TOLERANCE:.0e}) on probe prompts; the export is wrong"
        )
    with torch.no_grad():
        hf_tokens = greedy(
            lambda i, m: model(input_ids=i, attention_mask=m, position_ids=positions(m)).logits,
            ids,
            mask,
        )
    ort_tokens = greedy(session, ids, mask)
    if ort_tokens != hf_tokens:
        raise StageFailed(
            f"ONNX greedy tokens {ort_tokens} differ from the merged model's {hf_tokens}"
        )
    return {
        "runtime": "onnxruntime CPUExecutionProvider",
        "prompt_tokens": [len(row) for row in encoded],
        "max_abs_diff_padded": padded_diff,
        "max_abs_diff_unpadded": alone_diff,
        "tolerance": LOGITS_TOLERANCE,
        "greedy_steps": GREEDY_STEPS,
        "greedy_tokens_equal": True,
    }


def _logit_diffs(
    session: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: PreTrainedModel,
    encoded: list[list[int]],
    ids: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[float, float]:
    """Largest |ONNX - transformers| logit over real positions: same padded batch, and alone."""
    ort_logits = session(ids, mask)
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
        alone = [model(input_ids=torch.tensor([row])).logits[0] for row in encoded]
    real = mask.bool()
    padded_diff = float((ort_logits[real] - padded[real]).abs().max())
    per_row = [(ort_logits[i, -len(row) :] - alone[i]).abs().max() for i, row in enumerate(encoded)]
    alone_diff = float(torch.stack(per_row).max())  # torch's max keeps NaN, Python's may not
    return padded_diff, alone_diff


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: 0 at each row's first real token (as generate)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def greedy(
    logits_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ids: torch.Tensor,
    mask: torch.Tensor,
    steps: int = GREEDY_STEPS,
) -> list[list[int]]:
    """Greedy continuation of a left-padded batch, re-reading the whole sequence each step."""
    chosen: list[list[int]] = [[] for _ in range(ids.shape[0])]
    for _ in range(steps):
        next_ids = logits_of(ids, mask)[:, -1].argmax(-1)
        for row, token in zip(chosen, next_ids.tolist(), strict=True):
            row.append(token)
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return chosen


def _session(path: Path) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """An onnxruntime CPU session as a function of (ids, mask) to logits."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def run(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions(mask)}
        arrays = {k: v.numpy().astype(np.int64) for k, v in feeds.items() if k in names}
        (logits,) = session.run(["logits"], arrays)
        return torch.from_numpy(logits)

    return run


def _load_model(folder: Path, attention: str | None = None) -> PreTrainedModel:
    options = {"attn_implementation": attention} if attention else {}
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **options)
    return model.eval()


def _copy_side_files(merged_dir: Path, out_dir: Path) -> list[str]:
    """Copy the tokenizer, chat template and configs (every file but weights)."""
    copied = []
    for path in sorted(merged_dir.iterdir()):
        if path.is_file() and not path.name.endswith(_WEIGHTS) and "index.json" not in path.name:
            shutil.copy2(path, out_dir / path.name)
            copied.append(path.name)
    return copied


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"ONNX export needs {module}: pip install 'tuneforge[export]'") from None
