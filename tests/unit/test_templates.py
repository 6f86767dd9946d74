"""Golden tests of rendering through real chat-template styles, and the fallback templates.

The templates below are the published Jinja of Qwen2.5-Instruct (ChatML with a default
system prompt and Hermes-style tool calls), Meta-Llama-3-Instruct (BOS and <|eot_id|>) and
Llama-2-chat ([INST] ... [/INST], the reply closed by </s>), applied to the project's own
BPE tokenizer with the special tokens each style needs.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers.processors import TemplateProcessing

from tuneforge.data.render import render_chat, render_prompt
from tuneforge.data.templates import fallback_template_name
from tuneforge.errors import DataError
from tuneforge.train.loss import IGNORE_INDEX

QWEN25 = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == "
    "'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are "
    "Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n    "
    '{{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.'
    "\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>"
    '" }}\n    {%- for tool in tools %}\n        {{- "\\n" }}\n        {{- tool | tojson }}\n   '
    ' {%- endfor %}\n    {{- "\\n</tools>\\n\\nFor each function call, return a json object with '
    "function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>'
    "\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- "
    "'<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful"
    " assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages "
    '%}\n    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or'
    " (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' "
    "+ message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- elif "
    "message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n        "
    "{%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif "
    "%}\n        {%- for tool_call in message.tool_calls %}\n            {%- if "
    "tool_call.function is defined %}\n                {%- set tool_call = tool_call.function "
    '%}\n            {%- endif %}\n            {{- \'\\n<tool_call>\\n{"name": "\' }}\n        '
    '    {{- tool_call.name }}\n            {{- \'", "arguments": \' }}\n            {{- '
    "tool_call.arguments | tojson }}\n            {{- '}\\n</tool_call>' }}\n        {%- "
    "endfor %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n      "
    '  {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n            '
    "{{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n  "
    "      {{- message.content }}\n        {{- '\\n</tool_response>' }}\n        {%- if "
    'loop.last or (messages[loop.index0 + 1].role != "tool") %}\n            {{- '
    "'<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if "
    "add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% "
    "set system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
    "(message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
    "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == "
    "0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] "
    "%}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
    "content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + "
    "content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Where is my parcel?"},
    {"role": "assistant", "content": "It ships today."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You are welcome."},
]
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
TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
    {"role": "assistant", "content": "It is 21 degrees in Paris."},
]


def style(base, template: str | None, *, specials: list[str], bos=None, eos=None, add_bos=False):
    """A copy of the project tokenizer set up for one chat-template style."""
    tokenizer = copy.deepcopy(base)
    tokenizer.add_tokens(specials, special_tokens=True)
    if bos:
        tokenizer.bos_token = bos
    if eos:
        tokenizer.eos_token = eos
    if add_bos:
        # As in Llama tokenizers: the post-processor puts BOS before every encoded text.
        tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tokenizer.bos_token_id)]
        )
    tokenizer.chat_template = template
    return tokenizer


@pytest.fixture(scope="module")
def qwen(chat_tokenizer):
    return style(chat_tokenizer, QWEN25, specials=[])


@pytest.fixture(scope="module")
def llama3(chat_tokenizer):
    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    return style(
        chat_tokenizer,
        LLAMA3,
        specials=specials,
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        add_bos=True,
    )


@pytest.fixture(scope="module")
def llama2(chat_tokenizer):
    return style(chat_tokenizer, LLAMA2, specials=["<s>", "</s>"], bos="<s>", eos="</s>")


@pytest.fixture(scope="module")
def styles(qwen, llama3, llama2):
    return {"qwen": qwen, "llama3": llama3, "llama2": llama2}


def trained_runs(tokenizer, rendered) -> list[str]:
    """The decoded text of each maximal run of trained tokens."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in rendered.labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return [tokenizer.decode(run) for run in runs]


def end_token_trained(tokenizer, rendered, token: str) -> list[bool]:
    end = tokenizer.convert_tokens_to_ids(token)
    return [rendered.labels[i] == end for i, t in enumerate(rendered.input_ids) if t == end]


def assert_prompts_are_trained_prefixes(tokenizer, messages, tools=None, template=None) -> None:
    """Before each reply, training saw exactly the generation prompt; the reply starts the loss."""
    full = render_chat(tokenizer, messages, tools=tools, template=template)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_prompt(tokenizer, messages[:index], tools=tools, template=template)
        assert full.input_ids[: len(prompt)] == prompt
        assert full.labels[len(prompt) - 1] == IGNORE_INDEX
        trained = message.get("weight", 1) == 1
        assert (full.labels[len(prompt)] == full.input_ids[len(prompt)]) is trained


def test_qwen25_chatml_with_its_default_system_prompt(qwen) -> None:
    rendered = render_chat(qwen, CONVERSATION[1:])
    assert qwen.decode(rendered.input_ids) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\nWhere is my parcel?<|im_end|>\n"
        "<|im_start|>assistant\nIt ships today.<|im_end|>\n<|im_start|>user\nThanks!<|im_end|>\n"
        "<|im_start|>assistant\nYou are welcome.<|im_end|>\n"
    )
    assert trained_runs(qwen, rendered) == [
        "It ships today.<|im_end|>",
        "You are welcome.<|im_end|>",
    ]
    # system, user, assistant, user, assistant
    assert end_token_trained(qwen, rendered, "<|im_end|>") == [False, False, True, False, True]
    assert_prompts_are_trained_prefixes(qwen, CONVERSATION[1:])
    prompt = render_prompt(qwen, CONVERSATION[1:2])
    assert qwen.decode(prompt).endswith("Where is my parcel?<|im_end|>\n<|im_start|>assistant\n")


def test_qwen25_tool_calls_and_results_render_through_the_template(qwen) -> None:
    rendered = render_chat(qwen, TOOL_CONVERSATION, tools=TOOLS)
    tool_json = json.dumps(TOOLS[0], ensure_ascii=False)
    assert qwen.decode(rendered.input_ids) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        f"{tool_json}\n</tools>\n\nFor each function call, return a json object with function "
        "name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        '<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\nIt is 21 degrees in Paris.<|im_end|>\n"
    )
    assert trained_runs(qwen, rendered) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        "<|im_end|>",
        "It is 21 degrees in Paris.<|im_end|>",
    ]
    assert_prompts_are_trained_prefixes(qwen, TOOL_CONVERSATION, tools=TOOLS)


def test_llama3_renders_one_bos_although_the_tokenizer_adds_one_too(llama3) -> None:
    rendered = render_chat(llama3, CONVERSATION)
    text = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhere is my parcel?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nIt ships today.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nThanks!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nYou are welcome.<|eot_id|>"
    )
    assert llama3.decode(rendered.input_ids) == text
    bos = llama3.bos_token_id
    assert llama3(text)["input_ids"][:2] == [bos, bos]  # the trap: encoding adds a second BOS
    assert rendered.input_ids[0] == bos and rendered.input_ids.count(bos) == 1
    assert render_prompt(llama3, CONVERSATION[:2]).count(bos) == 1
    assert trained_runs(llama3, rendered) == [
        "It ships today.<|eot_id|>",
        "You are welcome.<|eot_id|>",
    ]
    assert end_token_trained(llama3, rendered, "<|eot_id|>") == [False, False, True, False, True]
    assert_prompts_are_trained_prefixes(llama3, CONVERSATION)


def test_llama2_inst_style_trains_the_reply_and_its_closing_eos(llama2) -> None:
    rendered = render_chat(llama2, CONVERSATION)
    assert llama2.decode(rendered.input_ids) == (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhere is my parcel? [/INST] It ships today. "
        "</s><s>[INST] Thanks! [/INST] You are welcome. </s>"
    )
    assert trained_runs(llama2, rendered) == [" It ships today. </s>", " You are welcome. </s>"]
    assert end_token_trained(llama2, rendered, "</s>") == [True, True]
    # one BOS per user turn, as the template writes them, none added by tokenizing
    assert rendered.input_ids.count(llama2.bos_token_id) == 2
    assert_prompts_are_trained_prefixes(llama2, CONVERSATION)
    prompt = render_prompt(llama2, CONVERSATION[:4])
    assert llama2.decode(prompt).endswith("</s><s>[INST] Thanks! [/INST]")


def test_train_on_modes_and_weights_on_a_real_template(llama3) -> None:
    weighted = [*CONVERSATION[:2], {**CONVERSATION[2], "weight": 0}, *CONVERSATION[3:]]
    runs = {
        mode: trained_runs(llama3, render_chat(llama3, weighted, train_on=mode))
        for mode in ("assistant", "last_assistant", "all")
    }
    assert runs["assistant"] == ["You are welcome.<|eot_id|>"]
    assert runs["last_assistant"] == ["You are welcome.<|eot_id|>"]
    assert runs["all"] == [
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhere is my parcel?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|start_header_id|>user<|end_header_id|>\n\nThanks!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nYou are welcome.<|eot_id|>",
    ]
    last = render_chat(llama3, CONVERSATION, train_on="last_assistant")
    assert trained_runs(llama3, last) == ["You are welcome.<|eot_id|>"]


def test_a_tokenizer_without_template_gets_the_fallback_its_vocabulary_fits(
    chat_tokenizer, llama3
) -> None:
    plain = style(chat_tokenizer, None, specials=[])
    assert fallback_template_name(plain) == "chatml"
    assert render_chat(plain, CONVERSATION) == render_chat(plain, CONVERSATION, template="chatml")
    # the ChatML fallback renders plain chats exactly as the project's own template does
    assert render_chat(plain, CONVERSATION) == render_chat(chat_tokenizer, CONVERSATION)
    assert fallback_template_name(llama3) == "llama-3"
    bare = copy.deepcopy(llama3)
    bare.chat_template = None
    assert render_chat(bare, CONVERSATION) == render_chat(llama3, CONVERSATION)


def test_alpaca_fallback_closes_replies_with_the_tokenizers_eos(llama2) -> None:
    rendered = render_chat(llama2, CONVERSATION, template="alpaca")
    assert llama2.decode(rendered.input_ids) == (
        "Be brief.\n\n### Instruction:\nWhere is my parcel?\n\n### Response:\nIt ships today."
        "</s>\n\n### Instruction:\nThanks!\n\n### Response:\nYou are welcome.</s>\n\n"
    )
    assert trained_runs(llama2, rendered) == ["It ships today.</s>", "You are welcome.</s>"]
    assert_prompts_are_trained_prefixes(llama2, CONVERSATION, template="alpaca")


def test_fallbacks_emit_bos_exactly_when_the_tokenizer_would_add_one(llama3, llama2) -> None:
    for name in ("chatml", "alpaca", "llama-3"):
        ids = render_chat(llama3, CONVERSATION, template=name).input_ids
        assert ids[0] == llama3.bos_token_id and ids.count(llama3.bos_token_id) == 1
        # llama2's tokenizer has a BOS but does not add it, so neither does the fallback
        assert llama2.bos_token_id not in render_chat(llama2, CONVERSATION, template=name).input_ids


@pytest.mark.parametrize("name", ["chatml", "llama-3", "alpaca"])
def test_fallbacks_render_tool_calls_and_train_them(chat_tokenizer, name) -> None:
    rendered = render_chat(chat_tokenizer, TOOL_CONVERSATION, tools=TOOLS, template=name)
    text = chat_tokenizer.decode(rendered.input_ids)
    runs = trained_runs(chat_tokenizer, rendered)
    assert "get_weather" in text and "Current weather in a city." in text
    assert '"temp_c": 21' in text and len(runs) == 2
    key = "parameters" if name == "llama-3" else "arguments"
    assert f'{{"name": "get_weather", "{key}": {{"city": "Paris"}}}}' in runs[0]
    assert runs[1].startswith("It is 21 degrees in Paris.")
    assert_prompts_are_trained_prefixes(chat_tokenizer, TOOL_CONVERSATION, TOOLS, name)


def test_an_opening_assistant_turn_is_not_trained(qwen) -> None:
    messages = [{"role": "assistant", "content": "Hello!"}, *CONVERSATION[1:3]]
    assert trained_runs(qwen, render_chat(qwen, messages)) == ["It ships today.<|im_end|>"]


def test_bad_options_and_templates_are_one_line_errors(chat_tokenizer, llama2) -> None:
    with pytest.raises(DataError, match="train_on 'every'"):
        render_chat(chat_tokenizer, CONVERSATION, train_on="every")
    with pytest.raises(DataError, match="chat template 'vicuna' is unknown"):
        render_chat(chat_tokenizer, CONVERSATION, template="vicuna")
    unstable = style(chat_tokenizer, "{{ messages[-1]['content'] }}", specials=[])
    with pytest.raises(DataError, match="not prefix-stable"):
        render_chat(unstable, CONVERSATION)
    with pytest.raises(DataError, match="roles must alternate"):
        render_chat(llama2, [CONVERSATION[0], CONVERSATION[2]])


# Whitespace at the edges of a turn is normalised by the data layer's cleaning, and the
# Llama templates trim it; content here starts and ends with a visible character.
TEXT = (
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=30)
    .map(str.strip)
    .filter(bool)
)
STYLES = {  # fixture name -> how a trained assistant turn decodes
    "qwen": lambda reply: f"{reply}<|im_end|>",
    "llama3": lambda reply: f"{reply}<|eot_id|>",
    "llama2": lambda reply: f" {reply} </s>",
}


@pytest.mark.parametrize("style_name", list(STYLES))
@settings(max_examples=30, deadline=None)
@given(
    system=st.one_of(st.none(), TEXT),
    turns=st.lists(st.tuples(TEXT, TEXT, st.sampled_from([0, 1])), min_size=1, max_size=4),
)
def test_masks_follow_mode_and_weights(styles, style_name, system, turns) -> None:
    tokenizer = styles[style_name]
    messages = [{"role": "system", "content": system}] if system else []
    for user, reply, weight in turns:
        messages += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": reply, "weight": weight},
        ]
    turn_text = STYLES[style_name]
    modes = {
        m: render_chat(tokenizer, messages, train_on=m)
        for m in ("assistant", "last_assistant", "all")
    }
    assert len({tuple(r.input_ids) for r in modes.values()}) == 1
    for rendered in modes.values():
        assert all(
            lab in (IGNORE_INDEX, tok)
            for lab, tok in zip(rendered.labels, rendered.input_ids, strict=True)
        )
    assert trained_runs(tokenizer, modes["assistant"]) == [turn_text(r) for _, r, w in turns if w]
    last_reply, last_weight = turns[-1][1], turns[-1][2]
    assert trained_runs(tokenizer, modes["last_assistant"]) == (
        [turn_text(last_reply)] if last_weight else []
    )
    untrained_in_all = trained_runs(tokenizer, _inverted(modes["all"]))
    assert untrained_in_all == [turn_text(r) for _, r, w in turns if not w]
    assert_prompts_are_trained_prefixes(tokenizer, messages)


def _inverted(rendered):
    """The same ids with trained and untrained positions swapped."""
    labels = [
        tok if lab == IGNORE_INDEX else IGNORE_INDEX
        for lab, tok in zip(rendered.labels, rendered.input_ids, strict=True)
    ]
    return type(rendered)(input_ids=rendered.input_ids, labels=labels)
