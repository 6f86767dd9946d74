"""GGUF export: written with the gguf package, read back by transformers' own GGUF reader.

The tiny model's merged folder goes to f32, f16 and q8_0 files; each is loaded by an
independent reader and compared with the merged model on logits, greedy tokens,
tokenizer ids and chat prompts. Mistral (grouped-query attention, untied output) and
Qwen2 (q/k/v biases, no permutation) are checked on small random models.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gguf import GGUFReader, TokenType
from gguf.quants import dequantize
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from tuneforge.data.render import render_chat_batch, render_prompt_batch
from tuneforge.errors import ConfigError, ModelError, StageFailed
from tuneforge.export.gguf import permute_for_rope, verify_gguf, write_gguf
from tuneforge.export.gguf_tokenizer import pre_tokenizer_name
from tuneforge.export.gguf_verify import run_probes

# Conversations the template-parity test renders both ways, at every assistant turn.
GOLDEN_CHATS: list[list[dict[str, str]]] = [
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
    ],
    [
        {"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
        {"role": "assistant", "content": "Air scatters blue light the most."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "Seven."},
        {"role": "user", "content": "And an even one?"},
        {"role": "assistant", "content": "Two."},
    ],
    [
        {"role": "user", "content": "Translate: café, naïve, 東京 🙂"},
        {"role": "assistant", "content": "Café, naive, Tokyo."},
        {"role": "user", "content": "\n  Now in code:\n```py\nprint('hi')\n```"},
        {"role": "assistant", "content": "print('hi')\t"},
    ],
]

QUANTS = ("f32", "f16", "q8_0")
# llama.cpp's own kernels vs transformers on the merged model (|logit| up to 2.2)
LLAMA_CPP_LOGIT_LIMIT = {"f16": 1e-2, "q8_0": 1e-1}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny matmuls: one thread avoids OpenMP waits when another process holds a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gguf_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """f32, f16 and q8_0 files of the tiny model, with write summaries in summaries.json."""
    out = tmp_path_factory.mktemp("gguf")
    summaries = {q: write_gguf(tiny_model_dir, out / f"tiny-{q}.gguf", q) for q in QUANTS}
    (out / "summaries.json").write_text(json.dumps(summaries))
    return out


def _summary(gguf_dir: Path, quant: str) -> dict[str, Any]:
    return json.loads((gguf_dir / "summaries.json").read_text())[quant]


def test_f32_round_trip_is_exact(gguf_dir: Path, tiny_model_dir: Path) -> None:
    # f32 stores the weights unrounded: any permutation or mapping error would show here.
    result = verify_gguf(gguf_dir / "tiny-f32.gguf", tiny_model_dir)
    assert result["max_abs_logit_diff"] == 0.0
    assert result["greedy_matched"] == result["greedy_steps"] == 40
    assert _summary(gguf_dir, "f32")["tensor_types"] == {"f32": 20}


def test_f16_logits_match_the_merged_model(gguf_dir: Path, tiny_model_dir: Path) -> None:
    result = verify_gguf(gguf_dir / "tiny-f16.gguf", tiny_model_dir)
    assert result["quant"] == "f16"
    assert result["conversion_diff"] == 0.0
    # measured 9.7e-4 absolute, 4.5e-4 of the logit range (2.17)
    assert 1e-5 < result["max_abs_logit_diff"] < 3e-3
    assert result["quantization_diff"] < 1.5e-3
    assert result["greedy_matched"] == 40
    assert result["tokenizer_mismatches"] == result["chat_prompt_mismatches"] == 0
    assert result["chat_template_equal"] is True
    summary = _summary(gguf_dir, "f16")
    assert summary["tensor_types"] == {"f16": 15, "f32": 5}  # norms stay f32


def test_q8_0_logits_match_within_quantization_error(gguf_dir: Path, tiny_model_dir: Path) -> None:
    result = verify_gguf(gguf_dir / "tiny-q8_0.gguf", tiny_model_dir)
    assert result["quant"] == "q8_0"
    assert result["conversion_diff"] == 0.0
    # measured 2.1e-2 absolute, 9.7e-3 of the logit range: ~20x the f16 error
    assert 5e-3 < result["max_abs_logit_diff"] < 6e-2
    assert result["quantization_diff"] < 3e-2
    assert result["greedy_matched"] == 40
    assert result["tokenizer_mismatches"] == result["chat_prompt_mismatches"] == 0
    sizes = {q: _summary(gguf_dir, q)["bytes"] for q in QUANTS}
    # 8.5 bits a weight against 16 and 32; the f32 norms and the vocabulary are shared
    assert sizes["q8_0"] / sizes["f16"] == pytest.approx(0.563, abs=0.02)
    assert sizes["f16"] / sizes["f32"] == pytest.approx(0.518, abs=0.02)
    assert _summary(gguf_dir, "q8_0")["tensor_types"] == {"q8_0": 15, "f32": 5}


def test_metadata_matches_the_merged_config(gguf_dir: Path, tiny_model_dir: Path) -> None:
    reader = GGUFReader(gguf_dir / "tiny-q8_0.gguf")
    fields = {name: field.contents() for name, field in reader.fields.items()}
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert fields["general.architecture"] == "llama"
    assert fields["general.file_type"] == 7  # MOSTLY_Q8_0
    assert fields["general.quantization_version"] == 2
    expected = {
        "llama.context_length": config["max_position_embeddings"],
        "llama.embedding_length": 64,
        "llama.block_count": 2,
        "llama.feed_forward_length": 128,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 4,
        "llama.rope.dimension_count": 16,
        "llama.vocab_size": 640,
    }
    assert {key: fields[key] for key in expected} == expected
    assert fields["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert fields["tokenizer.chat_template"] == tokenizer.chat_template
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "gpt-2"
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 640  # padded to the embedding's rows
    assert tokens[:4] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
    assert types[:4] == [TokenType.CONTROL] * 4
    assert tokens[600:602] == ["[PAD600]", "[PAD601]"] and set(types[600:]) == {TokenType.UNUSED}
    assert tokens[4:600] == [tokenizer.convert_ids_to_tokens(i) for i in range(4, 600)]
    assert len(fields["tokenizer.ggml.merges"]) == 340
    # generation_config's eos [<|im_end|>, <|endoftext|>]: primary eos, the other as eot
    assert fields["tokenizer.ggml.eos_token_id"] == 2
    assert fields["tokenizer.ggml.eot_token_id"] == 0
    assert fields["tokenizer.ggml.eos_token_ids"] == [2, 0]
    assert fields["tokenizer.ggml.padding_token_id"] == 3
    assert "tokenizer.ggml.bos_token_id" not in fields  # the tiny tokenizer has no BOS
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.ggml.add_eos_token"] is False
    names = [tensor.name for tensor in reader.tensors]
    assert "output.weight" not in names  # tied: llama.cpp reuses token_embd.weight
    assert len(names) == 2 + 2 * 9  # token_embd, output_norm, 9 per block
    per_block = "attn_norm attn_q attn_k attn_v attn_output ffn_norm ffn_gate ffn_up ffn_down"
    expected_block = {f"blk.1.{kind}.weight" for kind in per_block.split(" ")}
    assert {n for n in names if n.startswith("blk.1.")} == expected_block


def test_q_and_k_are_stored_in_llama_cpp_row_order(gguf_dir: Path, tiny_model_dir: Path) -> None:
    weights = load_file(tiny_model_dir / "model.safetensors")
    tensors = {t.name: t for t in GGUFReader(gguf_dir / "tiny-f32.gguf").tensors}
    for kind, hf_kind in (("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj")):
        stored = dequantize(
            tensors[f"blk.0.{kind}.weight"].data, tensors[f"blk.0.{kind}.weight"].tensor_type
        )
        original = weights[f"model.layers.0.self_attn.{hf_kind}.weight"].numpy()
        expected = original if kind == "attn_v" else permute_for_rope(original, 4)
        assert np.array_equal(stored, expected)
        if kind != "attn_v":
            assert not np.array_equal(stored, original)
            # the inverse transformers and llama.cpp's converter apply: (heads, d/2, 2) -> swap
            back = stored.reshape(4, 8, 2, 64).swapaxes(2, 1).reshape(64, 64)
            assert np.array_equal(back, original)


def test_template_parity_with_the_training_renderer(gguf_dir: Path, tiny_model_dir: Path) -> None:
    # At every assistant turn, the prompt the file's own template renders must be, token
    # for token, what training put before that reply.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trained = render_chat_batch(tokenizer, [(chat, None) for chat in GOLDEN_CHATS])
    turns = [
        (chat[:index], rendered.input_ids)
        for chat, rendered in zip(GOLDEN_CHATS, trained, strict=True)
        for index, message in enumerate(chat)
        if message["role"] == "assistant"
    ]
    prompts = render_prompt_batch(tokenizer, [(prefix, None) for prefix, _ in turns])
    for quant in ("f16", "q8_0"):
        alone = gguf_dir / f"alone-{quant}"
        alone.mkdir(exist_ok=True)
        shutil.copyfile(gguf_dir / f"tiny-{quant}.gguf", alone / "model.gguf")
        from_file = AutoTokenizer.from_pretrained(alone, gguf_file="model.gguf")
        for (prefix, training_ids), expected in zip(turns, prompts, strict=True):
            actual = from_file.apply_chat_template(
                prefix, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            assert list(actual) == expected == training_ids[: len(expected)]
    assert len(turns) == 6
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    for (prefix, _), ids in zip(turns, prompts, strict=True):
        assert ids.count(im_start) == len(prefix) + 1  # one per message, one to answer
        assert tokenizer.decode(ids).endswith("<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.xfail(
    strict=True,
    reason="train/serve drift in data/render.py: an earlier reply's leading whitespace is "
    "tokenized apart from the newline before it, while runtimes (llama.cpp, Ollama, "
    "apply_chat_template) tokenize the rendered prompt in one go and merge them",
)
def test_prompt_parity_when_a_reply_starts_with_whitespace(
    gguf_dir: Path, tiny_model_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    alone = gguf_dir / "alone-whitespace"
    alone.mkdir(exist_ok=True)
    shutil.copyfile(gguf_dir / "tiny-f16.gguf", alone / "model.gguf")
    from_file = AutoTokenizer.from_pretrained(alone, gguf_file="model.gguf")
    chat = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "  Hello."},
        {"role": "user", "content": "Again"},
    ]
    (expected,) = render_prompt_batch(tokenizer, [(chat, None)])
    actual = from_file.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert list(actual) == expected  # 35 ids against the renderer's 36


def test_gqa_untied_mistral_and_biased_qwen2(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    shape = {
        "vocab_size": 640,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "initializer_range": 0.1,
    }
    # (not named plain "mistral": transformers maps general.name "mistral" to an
    # architecture its GGUF loader then cannot find)
    models = {
        "mistral-gqa": (MistralForCausalLM, MistralConfig(**shape, tie_word_embeddings=False)),
        "qwen2-bias": (Qwen2ForCausalLM, Qwen2Config(**shape, tie_word_embeddings=True)),
    }
    for label, (model_class, config) in models.items():
        torch.manual_seed(0)
        folder = tmp_path / label
        model_class(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        written = write_gguf(folder, tmp_path / f"{label}.gguf", "f32")
        result = verify_gguf(tmp_path / f"{label}.gguf", folder)
        assert result["max_abs_logit_diff"] == 0.0, label
        assert result["greedy_matched"] == 40, label
        assert written["tied_embeddings"] is (label == "qwen2-bias")
    assert written["architecture"] == "qwen2" and written["tensor_types"] == {"f32": 26}
    # Random weights quantize worse than trained ones: measured 3.9e-2 of the logit range,
    # and greedy decoding parted at 2 near-ties (33/40 tokens) that rounding may flip.
    write_gguf(tmp_path / "mistral-gqa", tmp_path / "mistral-gqa-q8_0.gguf", "q8_0")
    result = verify_gguf(tmp_path / "mistral-gqa-q8_0.gguf", tmp_path / "mistral-gqa")
    assert result["conversion_diff"] == 0.0
    assert 1e-2 < result["quantization_diff"] < 5e-2
    assert result["greedy_diverged"] == 0 and result["greedy_near_ties"] >= 1


def test_verify_fails_on_a_different_model(
    gguf_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The merged model with layer 0's Q/K rows in llama.cpp order: what a reader that
    # forgot to undo the permutation would compute.
    altered = tmp_path / "altered"
    shutil.copytree(tiny_model_dir, altered)
    weights = load_file(altered / "model.safetensors")
    for name in ("q_proj", "k_proj"):
        key = f"model.layers.0.self_attn.{name}.weight"
        weights[key] = torch.from_numpy(permute_for_rope(weights[key].numpy(), 4).copy())
    save_file(weights, altered / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(StageFailed, match="rounded as the file stores it") as error:
        verify_gguf(gguf_dir / "tiny-q8_0.gguf", altered)
    assert "\n" not in str(error.value)


def test_unsupported_architecture_is_one_line(tmp_path: Path) -> None:
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, architectures=["GPT2LMHeadModel"])
    config.save_pretrained(tmp_path)
    with pytest.raises(ModelError) as error:
        write_gguf(tmp_path, tmp_path / "model.gguf")
    message = str(error.value)
    assert "\n" not in message
    assert "GPT2LMHeadModel" in message and "LlamaForCausalLM, MistralForCausalLM" in message
    assert not (tmp_path / "model.gguf").exists()


def test_unknown_quant_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"quant 'q4_k_m' is unknown; choose one of f32, f16"):
        write_gguf(tiny_model_dir, tmp_path / "model.gguf", "q4_k_m")


def test_tokenizers_llama_cpp_cannot_reproduce_are_refused() -> None:
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    assert pre_tokenizer_name({"model": {"type": "BPE"}, "pre_tokenizer": byte_level}) == "gpt-2"
    with pytest.raises(ModelError, match="sentencepiece-style BPE"):
        pre_tokenizer_name({"model": {"type": "BPE", "byte_fallback": True}})
    digits = {"type": "Sequence", "pretokenizers": [{"type": "Digits"}, byte_level]}
    with pytest.raises(ModelError, match=r"has no llama\.cpp equivalent"):
        pre_tokenizer_name({"model": {"type": "BPE"}, "pre_tokenizer": digits})


@pytest.mark.llama_cpp
def test_llama_cpp_runs_the_file_like_the_merged_model(
    gguf_dir: Path, tiny_model_dir: Path
) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = render_prompt_batch(tokenizer, [(chat, None) for chat in GOLDEN_CHATS])
    reference = run_probes(model, prompts, 8)
    for quant, limit in LLAMA_CPP_LOGIT_LIMIT.items():
        llm = llama_cpp.Llama(
            str(gguf_dir / f"tiny-{quant}.gguf"),
            n_ctx=256,
            n_threads=2,
            logits_all=True,
            verbose=False,
        )
        for ids, logits, tokens in zip(prompts, reference.logits, reference.tokens, strict=True):
            text = tokenizer.decode(ids)
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids, quant
            llm.reset()
            llm.eval(ids)
            assert np.abs(llm.scores[: len(ids)] - logits.numpy()).max() < limit, quant
            produced = []
            for _ in range(8):
                produced.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
                llm.eval(produced[-1:])
            assert produced == tokens, quant
