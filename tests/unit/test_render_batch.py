"""render_chat_batch: each result is exactly what render_chat gives for that conversation."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers.processors import TemplateProcessing

from tuneforge.data.render import TRAIN_ON, render_chat, render_chat_batch
from tuneforge.errors import DataError
from tuneforge.train.loss import IGNORE_INDEX

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
CONVERSATIONS = [
    (
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where is my parcel?"},
            {"role": "assistant", "content": "It ships today."},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "You are welcome."},
        ],
        None,
    ),
    (
        [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
            {"role": "assistant", "content": "It is 21 degrees in Paris."},
        ],
        TOOLS,
    ),
    (
        [
            {"role": "assistant", "content": "Hello! How can I help?"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Two "}, {"type": "text", "text": "parts"}],
            },
            {"role": "assistant", "content": "Joined.", "weight": 0},
            {"role": "user", "content": "And now?"},
            {"role": "assistant", "content": "Now trained."},
        ],
        [],
    ),
    ([{"role": "user", "content": "A question with no answer yet."}], None),
    ([{"role": "user", "content": "Short."}, {"role": "assistant", "content": "Yes."}], TOOLS),
]


def one_by_one(tokenizer, conversations, **options):
    return [
        render_chat(tokenizer, messages, tools=tools, **options)
        for messages, tools in conversations
    ]


def with_bos(tokenizer):
    """A copy that adds a BOS to every encoded text, as Llama tokenizers do."""
    bos_tokenizer = copy.deepcopy(tokenizer)
    bos_tokenizer.add_tokens(["<s>"], special_tokens=True)
    bos_tokenizer.bos_token = "<s>"
    bos_tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos_tokenizer.bos_token_id)]
    )
    return bos_tokenizer


@pytest.mark.parametrize("template", [None, "chatml", "llama-3", "alpaca"])
@pytest.mark.parametrize("train_on", TRAIN_ON)
@pytest.mark.parametrize("max_length", [None, 1, 12, 40])
def test_batch_equals_one_at_a_time(chat_tokenizer, template, train_on, max_length) -> None:
    options = {"max_length": max_length, "train_on": train_on, "template": template}
    batch = render_chat_batch(chat_tokenizer, CONVERSATIONS, **options)
    assert batch == one_by_one(chat_tokenizer, CONVERSATIONS, **options)
    if max_length is not None:
        assert all(len(r.input_ids) == len(r.labels) <= max_length for r in batch)


def test_results_do_not_depend_on_the_rest_of_the_batch(chat_tokenizer) -> None:
    forward = render_chat_batch(chat_tokenizer, CONVERSATIONS)
    backward = render_chat_batch(chat_tokenizer, CONVERSATIONS[::-1])
    assert backward == forward[::-1]
    assert render_chat_batch(chat_tokenizer, CONVERSATIONS + CONVERSATIONS) == forward + forward
    assert render_chat_batch(chat_tokenizer, []) == []


def test_trained_tokens_are_the_replies_and_their_end_tokens(chat_tokenizer) -> None:
    rendered = render_chat_batch(chat_tokenizer, CONVERSATIONS, template="chatml")
    trained = [chat_tokenizer.decode([t for t in r.labels if t != IGNORE_INDEX]) for r in rendered]
    assert trained[0] == "It ships today.<|im_end|>You are welcome.<|im_end|>"
    assert trained[1].endswith("It is 21 degrees in Paris.<|im_end|>")
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in trained[1]
    assert trained[2] == "Now trained.<|im_end|>"  # opening and weight-0 turns are not
    assert trained[3] == ""
    text = chat_tokenizer.apply_chat_template(CONVERSATIONS[0][0], tokenize=False)
    assert chat_tokenizer.decode(rendered[0].input_ids) == text


def test_bos_is_never_doubled_in_a_batch(chat_tokenizer) -> None:
    bos_tokenizer = with_bos(chat_tokenizer)
    bos = bos_tokenizer.bos_token_id
    for template in ("chatml", "llama-3", "alpaca"):
        batch = render_chat_batch(bos_tokenizer, CONVERSATIONS, template=template)
        assert batch == one_by_one(bos_tokenizer, CONVERSATIONS, template=template)
        assert all(r.input_ids[0] == bos and r.input_ids.count(bos) == 1 for r in batch)


def test_a_backend_left_truncating_encodes_as_the_tokenizer_call_would(chat_tokenizer) -> None:
    # Another caller may leave truncation or padding set on the shared Rust tokenizer.
    expected = render_chat_batch(chat_tokenizer, CONVERSATIONS)
    truncating = copy.deepcopy(chat_tokenizer)
    truncating.backend_tokenizer.enable_truncation(max_length=3)
    truncating.backend_tokenizer.enable_padding(length=64)
    assert render_chat_batch(truncating, CONVERSATIONS) == expected


def test_bad_options_and_conversations_fail_the_batch(chat_tokenizer) -> None:
    with pytest.raises(DataError, match="train_on 'every'"):
        render_chat_batch(chat_tokenizer, CONVERSATIONS, train_on="every")
    with pytest.raises(DataError, match="chat template 'vicuna' is unknown"):
        render_chat_batch(chat_tokenizer, CONVERSATIONS, template="vicuna")
    unstable = copy.deepcopy(chat_tokenizer)
    unstable.chat_template = "{{ messages[-1]['content'] }}"
    with pytest.raises(DataError, match="not prefix-stable"):
        render_chat_batch(unstable, CONVERSATIONS)


TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30
)
MESSAGE = st.one_of(
    st.builds(lambda text: {"role": "user", "content": text}, TEXT),
    st.builds(
        lambda text, weight: {"role": "assistant", "content": text, "weight": weight},
        TEXT,
        st.sampled_from([0, 1, None]),
    ),
    st.builds(lambda: {"role": "assistant", "content": "", "tool_calls": [CALL]}),
    st.builds(lambda text: {"role": "tool", "tool_call_id": "call_1", "content": text}, TEXT),
)
CONVERSATION = st.tuples(
    st.tuples(st.one_of(st.none(), TEXT), st.lists(MESSAGE, min_size=1, max_size=6)).map(
        lambda parts: ([{"role": "system", "content": parts[0]}] if parts[0] else []) + parts[1]
    ),
    st.sampled_from([None, TOOLS]),
)


@settings(max_examples=60, deadline=None)
@given(
    conversations=st.lists(CONVERSATION, max_size=5),
    train_on=st.sampled_from(TRAIN_ON),
    max_length=st.one_of(st.none(), st.integers(1, 80)),
    template=st.sampled_from([None, "chatml", "llama-3", "alpaca"]),
)
def test_any_batch_equals_one_at_a_time(
    chat_tokenizer, conversations, train_on, max_length, template
) -> None:
    options = {"max_length": max_length, "train_on": train_on, "template": template}
    batch = render_chat_batch(chat_tokenizer, conversations, **options)
    assert batch == one_by_one(chat_tokenizer, conversations, **options)
    for rendered in batch:
        assert all(
            label in (IGNORE_INDEX, token)
            for label, token in zip(rendered.labels, rendered.input_ids, strict=True)
        )
