"""Prove a GGUF file is the merged model: read it back with an independent reader.

``transformers`` reads GGUF with its own code (tensor un-permutation,
dequantization, a tokenizer rebuilt from ``tokenizer.ggml.*``), written apart
from the ``gguf`` package's writer that :func:`tuneforge.export.gguf.write_gguf`
uses. :func:`verify_gguf` loads the file that way and compares it with the merged
Hugging Face model on what a user sees: next-token logits, greedy replies,
token ids of text with special tokens, and chat prompts rendered through the
file's own template against the project's renderer.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gguf import (
    MODEL_ARCH_NAMES,
    GGMLQuantizationType,
    GGUFReader,
    LlamaFileType,
    get_tensor_name_map,
)
from gguf.quants import dequantize, quantize
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    PreTrainedTokenizerBase,
)

from tuneforge.data.render import render_prompt_batch
from tuneforge.errors import StageFailed

# Two logit checks, both as a fraction of the merged model's largest |logit| on the
# probes. CONVERSION: against the merged model with each weight rounded exactly as
# the file stores it, so only a conversion bug (a wrong permutation, tensor or
# hyper-parameter) shows; measured 0.0 for every type on the tiny model, while
# leaving out the Q/K permutation gives 1.3e-2 and swapping two FFN weights 1.5e-1.
# QUANTIZATION: against the merged model itself, the precision a user gives up;
# measured on the tiny model (tests/integration/test_gguf.py) f16 4.5e-4, bf16
# 8.2e-3, q8_0 9.7e-3; the limits leave 5-10x headroom for deeper models.
CONVERSION_TOLERANCE = 1e-4
QUANTIZATION_TOLERANCE = {"f32": 1e-5, "f16": 5e-3, "bf16": 5e-2, "q8_0": 5e-2}
GREEDY_STEPS = 8
PROBE_CHATS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Name three primary colours."},
    ],
    [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Tell me a short story about a cat."},
    ],
]
PROBE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces,\ttabs\n\nand blank lines  ",
    "naïve café, Tōkyō, 東京, emoji 🙂 and ∑ symbols",
    "numbers 1234567 and 3.14159, ids like A-42_b",
    "def square(x):\n    return x ** 2\n",
]
_FILE_TYPES = {
    LlamaFileType.ALL_F32: "f32",
    LlamaFileType.MOSTLY_F16: "f16",
    LlamaFileType.MOSTLY_BF16: "bf16",
    LlamaFileType.MOSTLY_Q8_0: "q8_0",
}


def verify_gguf(gguf_file: Path, merged_dir: Path) -> dict[str, Any]:
    """Check that a GGUF file behaves as the merged model it was written from.

    Args:
        gguf_file: The file :func:`~tuneforge.export.gguf.write_gguf` wrote.
        merged_dir: The Hugging Face folder it was written from.

    Returns:
        The numbers: quant; ``max_abs_logit_diff`` against the merged model and its
        fraction of the logit range (``quantization_diff``); ``conversion_diff``
        against the merged model rounded as the file stores it; greedy tokens
        compared and matched, and divergences at near-ties; tokenizer probes and chat
        prompts compared, with mismatches; whether the chat template is equal.

    Raises:
        StageFailed: a comparison fails; the message names the first failure.
    """
    gguf_file, merged_dir = Path(gguf_file), Path(merged_dir)
    reader = GGUFReader(gguf_file)
    quant = file_quant(reader, gguf_file)
    hf_tok = AutoTokenizer.from_pretrained(merged_dir)
    prompts = render_prompt_batch(hf_tok, [(chat, None) for chat in PROBE_CHATS])
    prompts += [hf_tok(text)["input_ids"] for text in PROBE_TEXTS[:2]]
    # One model in memory at a time: each is run on every probe, then dropped.
    merged = run_probes(_load(merged_dir), prompts, GREEDY_STEPS)
    rounded = run_probes(rounded_like(_load(merged_dir), reader), prompts, 0)
    with _alone(gguf_file) as folder:
        gguf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file.name)
        candidate = run_probes(_load(folder, gguf_file=gguf_file.name), prompts, GREEDY_STEPS)
    scale = max(float(logits.abs().max()) for logits in merged.logits)
    diff = _max_gap(merged.logits, candidate.logits)
    tolerance = QUANTIZATION_TOLERANCE[quant]
    summary = {
        "quant": quant,
        "max_abs_logit_diff": diff,
        "logit_scale": scale,
        "quantization_diff": diff / scale,
        "quantization_tolerance": tolerance,
        "conversion_diff": _max_gap(rounded.logits, candidate.logits) / scale,
        "conversion_tolerance": CONVERSION_TOLERANCE,
        **compare_greedy(merged, candidate, 2 * tolerance * scale),
        "tokenizer_texts": len(tokenizer_texts(hf_tok)),
        "tokenizer_mismatches": tokenizer_mismatches(hf_tok, gguf_tok),
        "chat_prompts": len(PROBE_CHATS),
        "chat_prompt_mismatches": template_mismatches(hf_tok, gguf_tok, PROBE_CHATS),
        "chat_template_equal": gguf_tok.chat_template == hf_tok.chat_template,
    }
    failure = _first_failure(summary)
    if failure:
        raise StageFailed(f"GGUF {gguf_file.name} does not match {merged_dir}: {failure}")
    return summary


def file_quant(reader: GGUFReader, gguf_file: Path) -> str:
    """The quant name (``f16``, ``q8_0`` ...) from the file's ``general.file_type``."""
    field = reader.fields.get("general.file_type")
    file_type = int(field.contents()) if field is not None else None
    if file_type not in _FILE_TYPES:
        raise StageFailed(f"{gguf_file} has general.file_type {file_type}; cannot verify it")
    return _FILE_TYPES[LlamaFileType(file_type)]


def rounded_like(model: Any, reader: GGUFReader) -> Any:
    """``model`` with every weight rounded to the type the GGUF file stores it in.

    Rounding and the Q/K row permutation commute (quantization blocks run along rows),
    so this model and a correct file compute the same logits up to float noise.
    """
    arch_name = reader.fields["general.architecture"].contents()
    arch = next(arch for arch, name in MODEL_ARCH_NAMES.items() if name == arch_name)
    names = get_tensor_name_map(arch, model.config.num_hidden_layers)
    stored = {tensor.name: tensor.tensor_type for tensor in reader.tensors}
    with torch.no_grad():
        for hf_name, param in model.named_parameters():
            qtype = stored.get(names.get_name(hf_name, try_suffixes=(".weight", ".bias")) or "")
            if qtype is None or qtype == GGMLQuantizationType.F32:
                continue
            data = dequantize(quantize(param.numpy(), qtype), qtype)
            param.copy_(torch.from_numpy(data.reshape(param.shape)))
    return model


@contextlib.contextmanager
def _alone(gguf_file: Path) -> Iterator[Path]:
    """A folder holding only a link to the file.

    transformers prefers a ``tokenizer.json`` or ``config.json`` lying beside the file
    to the file's own metadata, which would make the check read the merged model twice.
    """
    with tempfile.TemporaryDirectory(prefix="tuneforge-gguf-") as folder:
        link = Path(folder) / gguf_file.name
        try:
            link.symlink_to(gguf_file.resolve())
        except OSError:  # no symlinks (some Windows setups): a copy reads the same
            shutil.copyfile(gguf_file, link)
        yield Path(folder)


def _load(path: Path, **kwargs: Any) -> Any:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)
    return model.eval()


@dataclass
class ProbeRun:
    """A model's outputs on the probe prompts."""

    logits: list[torch.Tensor]  # per prompt: (prompt length, vocab)
    tokens: list[list[int]]  # per prompt: greedy continuation
    step_logits: list[torch.Tensor]  # per prompt: (steps, vocab) the argmax was taken over


@torch.no_grad()
def run_probes(model: Any, prompts: list[list[int]], steps: int) -> ProbeRun:
    """Logits of every prompt position and ``steps`` greedy tokens (no stop token)."""
    run = ProbeRun([], [], [])
    for ids in prompts:
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True).logits[0]
        run.logits.append(logits)
        tokens, step_logits = [], []
        for _ in range(steps):
            step_logits.append(logits[-1])
            tokens.append(int(logits[-1].argmax()))
            step = torch.tensor([tokens[-1:]])
            logits = model(input_ids=step, cache=cache, use_cache=True).logits[0]
        run.tokens.append(tokens)
        run.step_logits.append(torch.stack(step_logits) if step_logits else torch.empty(0))
    return run


def _max_gap(expected: list[torch.Tensor], actual: list[torch.Tensor]) -> float:
    """Largest |difference| over all prompts; NaN counts as infinitely far."""
    gaps = [
        torch.nan_to_num((a - b).abs(), nan=float("inf")).max()
        for a, b in zip(expected, actual, strict=True)
    ]
    return float(max(gaps))


def compare_greedy(reference: ProbeRun, candidate: ProbeRun, tie_margin: float) -> dict[str, int]:
    """Greedy tokens of both runs, compared up to the first difference per prompt.

    A difference is a near-tie, and allowed, when the reference model itself scored the
    two tokens within ``tie_margin`` (the logit error the quant type may add on each
    side): rounding can flip such an argmax. Any other difference is a failure.
    """
    steps, matched, near_ties, diverged = 0, 0, 0, 0
    for expected, actual, logits in zip(
        reference.tokens, candidate.tokens, reference.step_logits, strict=True
    ):
        same = _common_prefix(expected, actual)
        steps, matched = steps + len(expected), matched + same
        if same == len(expected):
            continue
        margin = float(logits[same, expected[same]] - logits[same, actual[same]])
        near_ties += margin <= tie_margin
        diverged += margin > tie_margin
    return {
        "greedy_steps": steps,
        "greedy_matched": matched,
        "greedy_near_ties": near_ties,
        "greedy_diverged": diverged,
    }


def tokenizer_texts(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Probe texts plus every special and added token, alone together and inside text."""
    specials = [*tokenizer.all_special_tokens, *map(str, tokenizer.added_tokens_decoder.values())]
    specials = list(dict.fromkeys(specials))
    return [*PROBE_TEXTS, "".join(specials), *(f"before {s} after\n" for s in specials)]


def tokenizer_mismatches(hf_tok: PreTrainedTokenizerBase, gguf_tok: PreTrainedTokenizerBase) -> int:
    """Probe texts with different ids, plus special tokens (bos, eos, pad) that differ."""
    texts = tokenizer_texts(hf_tok)
    mismatches = sum(hf_tok(t)["input_ids"] != gguf_tok(t)["input_ids"] for t in texts)
    for kind in ("bos_token", "eos_token", "pad_token"):
        mismatches += getattr(hf_tok, kind) != getattr(gguf_tok, kind)
    return mismatches


def template_mismatches(
    hf_tok: PreTrainedTokenizerBase,
    gguf_tok: PreTrainedTokenizerBase,
    chats: list[list[dict[str, str]]],
) -> int:
    """Chats whose prompt ids differ: the project's renderer vs the file's own template."""
    rendered = render_prompt_batch(hf_tok, [(chat, None) for chat in chats])
    mismatches = 0
    for chat, expected in zip(chats, rendered, strict=True):
        actual = gguf_tok.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        mismatches += list(actual) != expected
    return mismatches


def _common_prefix(a: list[int], b: list[int]) -> int:
    pairs = zip(a, b, strict=False)
    return next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(a), len(b)))


def _first_failure(summary: dict[str, Any]) -> str | None:
    if summary["conversion_diff"] > summary["conversion_tolerance"]:
        return (
            f"logits differ by {summary['conversion_diff']:.2e} of their range from the "
            f"merged model rounded as the file stores it (limit {CONVERSION_TOLERANCE:.0e})"
        )
    if summary["quantization_diff"] > summary["quantization_tolerance"]:
        return (
            f"{summary['quant']} logits differ by {summary['quantization_diff']:.2e} of their "
            f"range (limit {summary['quantization_tolerance']:.0e})"
        )
    if summary["greedy_diverged"]:
        return f"greedy decoding differs on {summary['greedy_diverged']} probe(s)"
    if summary["tokenizer_mismatches"]:
        return f"{summary['tokenizer_mismatches']} tokenizer probes give different ids or tokens"
    if summary["chat_prompt_mismatches"]:
        return f"{summary['chat_prompt_mismatches']} chat prompts render to different token ids"
    if not summary["chat_template_equal"]:
        return "the chat template in the file differs from the merged tokenizer's"
    return None
