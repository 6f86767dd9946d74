"""Batched generation: equal to one prompt at a time, in order, with stops, bounds and seeds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

from tuneforge.data.render import render_prompt_batch
from tuneforge.eval.generate import Sampling, generate, generate_ids, left_pad, stop_ids
from tuneforge.models.load import load_tokenizer

NEW = 16
SYSTEM = {"role": "system", "content": "Route the support ticket. Reply with JSON only."}
QUESTIONS = [
    "Hi.",
    "Can you merge my two accounts, please?",
    "What does pricing look like for a team of 250 people? We also need single sign-on.",
    "Refund",
    "The export button does nothing since yesterday's update; I tried two browsers and "
    "cleared the cache, and my whole team sees the same thing. This is urgent for us.",
    "How do I change the e-mail address on my invoices?",
    "Is there an API rate limit?",
    "My password reset link expired before I could use it. Can you send another one?",
]
PROMPTS = [
    [SYSTEM, {"role": "user", "content": q}] if i % 2 else [{"role": "user", "content": q}]
    for i, q in enumerate(QUESTIONS)
]


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path):
    """The tiny model's tokenizer and architecture, with random untied weights.

    The briefly pre-trained fixture answers every prompt with the same repeated word, so
    a padding or position error would go unseen; random weights (std 0.1) make the
    greedy token depend on every earlier token and position.
    """
    tokenizer = load_tokenizer(str(tiny_model_dir))
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.initializer_range, config.tie_word_embeddings = 0.1, False
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config = GenerationConfig.from_pretrained(tiny_model_dir)
    # One thread: a 64-wide model gains nothing from more, and on a busy machine every
    # parallel region waits for a descheduled thread (100x slower decoding steps).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model, tokenizer
    torch.set_num_threads(threads)


def one_at_a_time(lm, prompts, sampling: Sampling) -> list[str]:
    model, tokenizer = lm
    return [generate(model, tokenizer, [p], sampling=sampling, label=None)[0] for p in prompts]


@pytest.fixture(scope="module")
def greedy_alone(lm) -> list[str]:
    return one_at_a_time(lm, PROMPTS, Sampling(max_new_tokens=NEW))


def test_left_pad_pads_on_the_left_and_masks_the_padding() -> None:
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_greedy_equals_one_prompt_at_a_time(lm, greedy_alone, batch_size: int) -> None:
    model, tokenizer = lm
    lengths = [len(ids) for ids in render_prompt_batch(tokenizer, [(p, None) for p in PROMPTS])]
    assert len(set(lengths)) == len(PROMPTS)  # every batch of several rows is padded
    assert len(set(greedy_alone)) == len(PROMPTS)  # the replies tell the prompts apart
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=NEW, batch_size=batch_size)
    assert batched == greedy_alone


def test_unmasked_padding_would_change_the_replies(lm, greedy_alone) -> None:
    """The equality above has teeth: padding the model can see changes what it says."""
    model, tokenizer = lm
    prompt_ids = render_prompt_batch(tokenizer, [(p, None) for p in PROMPTS])
    ids, _ = left_pad(prompt_ids, tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=NEW,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    replies = tokenizer.batch_decode(output[:, ids.shape[1] :], skip_special_tokens=True)
    assert sum(r.strip() != g for r, g in zip(replies, greedy_alone, strict=True)) >= 4


def test_replies_come_back_in_prompt_order(lm, greedy_alone) -> None:
    model, tokenizer = lm
    shuffled = [PROMPTS[i] for i in (5, 0, 7, 2, 4, 1, 6, 3)]
    replies = generate(model, tokenizer, shuffled, max_new_tokens=NEW, batch_size=3, label=None)
    assert replies == [greedy_alone[i] for i in (5, 0, 7, 2, 4, 1, 6, 3)]


def test_a_stop_string_cuts_the_reply_before_it_and_stops_the_row(lm, greedy_alone) -> None:
    model, tokenizer = lm
    index, full = next((i, r) for i, r in enumerate(greedy_alone) if r[6:8].isalpha())
    stop = full[6:8]
    sampling = Sampling(max_new_tokens=NEW, stop=("never appears", stop))
    replies = generate(model, tokenizer, PROMPTS, sampling=sampling, batch_size=16, label=None)
    assert replies[index] == full[: full.find(stop)].strip()
    assert all(stop not in reply for reply in replies)
    # Token level: the row ends with the token that completed the stop string.
    prompt_ids = render_prompt_batch(tokenizer, [(PROMPTS[index], None)])
    options = {"pad_id": tokenizer.pad_token_id, "stop_ids": stop_ids(model, tokenizer)}
    (stopped,) = generate_ids(
        model, prompt_ids, sampling=sampling, batch_size=1, tokenizer=tokenizer, **options
    )
    (whole,) = generate_ids(model, prompt_ids, sampling=Sampling(NEW), batch_size=1, **options)
    assert len(stopped) < len(whole) and whole[: len(stopped)] == stopped
    assert stop in tokenizer.decode(stopped) and stop not in tokenizer.decode(stopped[:-1])


def test_max_new_tokens_bounds_every_completion(lm) -> None:
    model, tokenizer = lm
    prompt_ids = render_prompt_batch(tokenizer, [(p, None) for p in PROMPTS])
    options = {"pad_id": tokenizer.pad_token_id, "stop_ids": stop_ids(model, tokenizer)}
    for new in (1, 5):
        rows = generate_ids(model, prompt_ids, sampling=Sampling(new), batch_size=4, **options)
        assert max(len(row) for row in rows) == new
    # The max_new_tokens keyword overrides the Sampling's.
    short = generate(model, tokenizer, PROMPTS, sampling=Sampling(NEW), max_new_tokens=5)
    assert short == [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]


def test_sampling_reproduces_for_a_seed_and_varies_across_seeds(lm) -> None:
    model, tokenizer = lm
    sampling = Sampling(max_new_tokens=NEW, temperature=1.0, seed=7)
    first = generate(model, tokenizer, PROMPTS, sampling=sampling, batch_size=4, label=None)
    again = generate(model, tokenizer, PROMPTS, sampling=sampling, batch_size=4, label=None)
    other = dataclasses.replace(sampling, seed=8)
    different = generate(model, tokenizer, PROMPTS, sampling=other, batch_size=4, label=None)
    assert first == again
    assert sum(a != b for a, b in zip(first, different, strict=True)) >= len(PROMPTS) // 2
    # Each prompt draws from its own stream: the batch it lands in changes nothing.
    for batch_size in (1, 16):
        assert (
            generate(model, tokenizer, PROMPTS, sampling=sampling, batch_size=batch_size) == first
        )


def test_temperature_zero_and_top_k_one_are_greedy(lm, greedy_alone) -> None:
    model, tokenizer = lm
    for sampling in (Sampling(NEW, temperature=0.0, seed=3), Sampling(NEW, 1.0, top_k=1)):
        assert generate(model, tokenizer, PROMPTS, sampling=sampling, label=None) == greedy_alone


def test_the_model_decodes_in_eval_mode_and_gets_its_mode_back(lm) -> None:
    model, tokenizer = lm
    modes: list[bool] = []
    hook = model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    model.train()
    try:
        generate(model, tokenizer, PROMPTS[:2], max_new_tokens=2, label=None)
        assert model.training
    finally:
        hook.remove()
        model.eval()
    assert modes and not any(modes)


@pytest.mark.parametrize(
    "field",
    [{"max_new_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0}, {"top_k": -1}, {"stop": ("",)}],
)
def test_sampling_rejects_values_that_decode_nothing(field: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(field))):
        Sampling(**field)


def test_the_models_own_generation_config_does_not_change_decoding(lm, greedy_alone) -> None:
    model, tokenizer = lm
    shipped = model.generation_config
    model.generation_config = GenerationConfig.from_dict(
        {**shipped.to_dict(), "repetition_penalty": 1.5, "no_repeat_ngram_size": 2}
    )
    model.generation_config.update(do_sample=True, temperature=0.3, top_k=5)
    try:
        replies = generate(model, tokenizer, PROMPTS, max_new_tokens=NEW, label=None)
    finally:
        model.generation_config = shipped
    assert replies == greedy_alone
