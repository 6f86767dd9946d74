"""Build the project's own tiny Llama model and BPE tokenizer, offline.

Tests and the quickstart need a real causal LM without a model hub. This
module trains a byte-level BPE tokenizer on generated English text, gives it a
ChatML chat template, and pre-trains a small Llama briefly on the same text
plus generic chat dialogues, so the result is a language model that answers in
prose, not random noise. The output is an ordinary Hugging Face folder.

Runs reuse a base model built before under the same runs directory (the stage
cache). ``$TUNEFORGE_TINY_CACHE`` names a folder that every runs directory on
the machine shares as well: :func:`cached_tiny_model` copies a model built
there before with the same key instead of building it again.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.config.schema import TinyModelConfig
from tuneforge.errors import ConfigError
from tuneforge.runs.hashing import file_sha256

if TYPE_CHECKING:  # torch and transformers load when a model is built, not for a stage key
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END, PAD]
# Bump when the corpus or the build changes, so cached tiny models are rebuilt.
BUILD_VERSION = 2
# A folder of built tiny models shared by every runs directory (unset: none).
CACHE_ENV = "TUNEFORGE_TINY_CACHE"
# In each entry of that folder: the key, the build's summary and the sha256 of each file.
CACHE_RECORD = "_tiny_cache.json"

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def build_tiny_model(
    out_dir: str | Path, spec: TinyModelConfig | None = None, seed: int = 0
) -> dict[str, Any]:
    """Train the tokenizer, pre-train the model, and save both as a Hugging Face folder.

    Args:
        out_dir: Folder to write (created).
        spec: Model shape and pre-training budget.
        seed: Seed for the corpus, initialisation and data order.

    Returns:
        A summary: parameter count, corpus size, first and last pre-training loss.
    """
    import torch
    from transformers import LlamaForCausalLM

    from tuneforge.models.corpus import assistant_dialogues, general_corpus, structured_text

    spec = spec or TinyModelConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    paragraphs = general_corpus(seed=seed, n_paragraphs=spec.corpus_paragraphs)
    paragraphs += structured_text(seed=seed, n=max(1, spec.corpus_paragraphs // 4))
    dialogues = assistant_dialogues(seed=seed, n=spec.corpus_dialogues)
    tokenizer = train_tokenizer(paragraphs, dialogues, spec.vocab_size)
    texts = paragraphs + [tokenizer.apply_chat_template(d, tokenize=False) for d in dialogues]
    model = LlamaForCausalLM(llama_config(spec, tokenizer))
    losses = pretrain(model, tokenizer, texts, spec, seed)
    model.generation_config.eos_token_id = [
        tokenizer.convert_tokens_to_ids(IM_END),
        tokenizer.convert_tokens_to_ids(END_OF_TEXT),
    ]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    summary = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "corpus_chars": sum(len(t) for t in texts),
        "pretrain_steps": spec.pretrain_steps,
        "pretrain_loss_first": losses[0] if losses else None,
        "pretrain_loss_last": _mean(losses[-20:]) if losses else None,
    }
    (out_dir / "tiny_model.json").write_text(json.dumps({"spec": spec.model_dump(), **summary}))
    return summary


def tiny_cache_dir() -> Path | None:
    """The shared tiny-model cache that ``$TUNEFORGE_TINY_CACHE`` names, or None when unset."""
    value = os.environ.get(CACHE_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def cached_tiny_model(
    out_dir: str | Path,
    spec: TinyModelConfig | None = None,
    seed: int = 0,
    *,
    key: str,
    cache: Path | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """:func:`build_tiny_model`, or a copy of the model built before with the same key.

    The cache holds one folder per key, renamed into place only when complete,
    with the sha256 of every file. A hit is copied into ``out_dir`` (so a run
    stays a self-contained directory) and checked against those hashes; a miss,
    or an entry whose files no longer match, is built and then stored.

    Args:
        out_dir: Folder to write (created).
        spec: Model shape and pre-training budget.
        seed: Seed for the corpus, initialisation and data order.
        key: What identifies the result: the base stage's key, which hashes
            ``spec``, ``seed``, :data:`BUILD_VERSION` and the tuneforge version.
        cache: The cache folder; default :func:`tiny_cache_dir`. None: no cache.
        say: Where to report what happened.

    Returns:
        The build's summary; after a copy with ``copied_from``, the entry's folder.

    Raises:
        ConfigError: the cache folder cannot be created.
    """
    cache = cache if cache is not None else tiny_cache_dir()
    out_dir = Path(out_dir)
    if cache is None:
        say("building the tiny base model (cached for later runs)")
        return build_tiny_model(out_dir, spec, seed)
    entry = cache / key
    summary = _copy_entry(entry, out_dir)
    if summary is None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"{CACHE_ENV}={cache}: cannot create the folder ({error})") from error
        with _building(cache / f".{key}.lock"):  # one builder per key; the others wait, then copy
            summary = _copy_entry(entry, out_dir)
            if summary is None:
                say(f"building the tiny base model (cached for later runs and in {cache})")
                summary = build_tiny_model(out_dir, spec, seed)
                _store_entry(entry, out_dir, key, summary)
                return summary
    say(f"tiny base model copied from the tiny-model cache ({entry})")
    return {**summary, "copied_from": str(entry)}


@contextlib.contextmanager
def _building(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (where ``fcntl`` exists) for the block."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent builds each store; the first rename wins
        yield
        return
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _copy_entry(entry: Path, out_dir: Path) -> dict[str, Any] | None:
    """Copy a complete cache entry into ``out_dir``; None (and the entry removed) otherwise."""
    try:
        record = json.loads((entry / CACHE_RECORD).read_text())
        files = dict(record["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no entry (an entry is renamed into place with its record)
    if "model.safetensors" not in files:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, digest in files.items():
        target = out_dir / name
        try:
            shutil.copyfile(entry / name, target)
            intact = file_sha256(target) == digest
        except OSError:
            intact = False
        if not intact:  # changed or deleted since it was stored: build afresh
            for copied in files:
                (out_dir / copied).unlink(missing_ok=True)
            shutil.rmtree(entry, ignore_errors=True)
            return None
    return dict(record.get("summary", {}))


def _store_entry(entry: Path, built: Path, key: str, summary: dict[str, Any]) -> None:
    """Store a copy of ``built`` as ``entry``: written beside it, then renamed into place."""
    tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(built, tmp)
    files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    record = {"key": key, "summary": summary, "files": files}
    (tmp / CACHE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    try:
        os.rename(tmp, entry)
    except OSError:  # another run stored the same model first; theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)


def train_tokenizer(
    paragraphs: list[str], dialogues: list[list[dict[str, str]]], vocab_size: int
) -> PreTrainedTokenizerFast:
    """Byte-level BPE on the corpus, with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    turns = (message["content"] for dialogue in dialogues for message in dialogue)
    bpe.train_from_iterator([*paragraphs, *turns, "system user assistant"], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=IM_END, pad_token=PAD, model_max_length=4096
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def pretrain(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    texts: list[str],
    spec: TinyModelConfig,
    seed: int,
) -> list[float]:
    """Plain causal-LM pre-training on fixed-length blocks of the concatenated corpus."""
    import torch
    from transformers import get_scheduler

    from tuneforge.console import progress
    from tuneforge.train.loss import token_loss_sum

    if spec.pretrain_steps == 0:
        return []
    blocks = _blocks(tokenizer, texts, spec.pretrain_seq_len, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.pretrain_lr, weight_decay=0.01)
    scheduler = get_scheduler(
        "cosine",
        optimizer,
        num_warmup_steps=max(1, spec.pretrain_steps // 20),
        num_training_steps=spec.pretrain_steps,
    )
    model.train()
    losses: list[float] = []
    order = torch.Generator().manual_seed(seed)
    started = time.time()
    with progress() as bar:
        task = bar.add_task("pre-train", total=spec.pretrain_steps, info="")
        for step in range(spec.pretrain_steps):
            index = torch.randint(len(blocks), (spec.pretrain_batch_size,), generator=order)
            batch = blocks[index]
            logits = model(input_ids=batch).logits
            loss_sum, count = token_loss_sum(logits, batch)
            loss = loss_sum / count
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            rate = (step + 1) * batch.numel() / max(time.time() - started, 1e-9)
            info = f"loss {_mean(losses[-10:]):.3f}  {rate:,.0f} tok/s"
            bar.update(task, advance=1, info=info)
    model.eval()
    return losses


def _blocks(
    tokenizer: PreTrainedTokenizerFast, texts: list[str], seq_len: int, seed: int
) -> torch.Tensor:
    import torch

    texts = list(texts)
    random.Random(seed).shuffle(texts)
    separator = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    ids: list[int] = []
    for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(encoded)
        ids.append(separator)
    usable = len(ids) // seq_len * seq_len
    return torch.tensor(ids[:usable], dtype=torch.long).view(-1, seq_len)


def llama_config(spec: TinyModelConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    from transformers import LlamaConfig

    vocab = 64 * math.ceil(len(tokenizer) / 64)  # a multiple of 64 keeps matmuls aligned
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
    )


def _mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)
