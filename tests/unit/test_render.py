"""The one rendering function: masks, EOS, and train/serve prompt identity."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tuneforge.data.render import prompt_messages, render_chat, render_prompt
from tuneforge.train.loss import IGNORE_INDEX

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Where is my parcel?"},
    {"role": "assistant", "content": "It ships today."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You are welcome."},
]


def trained_text(tokenizer, rendered) -> str:
    return tokenizer.decode([t for t in rendered.labels if t != IGNORE_INDEX])


def test_only_assistant_turns_and_their_end_tokens_are_trained(chat_tokenizer) -> None:
    rendered = render_chat(chat_tokenizer, CONVERSATION)
    assert len(rendered.input_ids) == len(rendered.labels)
    assert (
        trained_text(chat_tokenizer, rendered)
        == "It ships today.<|im_end|>You are welcome.<|im_end|>"
    )


def test_every_assistant_end_of_turn_token_carries_loss(chat_tokenizer) -> None:
    rendered = render_chat(chat_tokenizer, CONVERSATION)
    end = chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    positions = [i for i, t in enumerate(rendered.input_ids) if t == end]
    trained = [rendered.labels[i] == end for i in positions]
    assert trained == [False, False, True, False, True]  # system, user, assistant, user, assistant


def test_generation_prompt_is_the_trained_prefix(chat_tokenizer) -> None:
    prompt, reply = prompt_messages(CONVERSATION)
    assert reply == "You are welcome."
    prompt_ids = render_prompt(chat_tokenizer, prompt)
    full = render_chat(chat_tokenizer, CONVERSATION)
    assert full.input_ids[: len(prompt_ids)] == prompt_ids
    assert full.labels[len(prompt_ids) - 1] == IGNORE_INDEX
    assert full.labels[len(prompt_ids)] != IGNORE_INDEX


def test_no_bos_is_added_by_tokenizing(chat_tokenizer) -> None:
    rendered = render_chat(chat_tokenizer, CONVERSATION[1:3])
    text = chat_tokenizer.apply_chat_template(CONVERSATION[1:3], tokenize=False)
    assert chat_tokenizer.decode(rendered.input_ids) == text


def test_max_length_cuts_both_sequences(chat_tokenizer) -> None:
    rendered = render_chat(chat_tokenizer, CONVERSATION, max_length=7)
    assert len(rendered.input_ids) == len(rendered.labels) == 7
    assert rendered.trained_tokens == 0


# Whitespace at the edges of a turn is normalised by the data layer's cleaning; here
# content starts and ends with a visible character, as it does after cleaning.
TEXT = (
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=40)
    .map(str.strip)
    .filter(bool)
)


@settings(max_examples=60, deadline=None)
@given(turns=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=3))
def test_masks_cover_exactly_the_assistant_replies(chat_tokenizer, turns) -> None:
    messages = []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    rendered = render_chat(chat_tokenizer, messages)
    expected = "".join(f"{assistant}<|im_end|>" for _, assistant in turns)
    assert trained_text(chat_tokenizer, rendered) == expected
    prompt_ids = render_prompt(chat_tokenizer, messages[:-1])
    assert rendered.input_ids[: len(prompt_ids)] == prompt_ids
