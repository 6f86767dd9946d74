"""Fallback chat templates for tokenizers that have none, or when one is asked for by name.

Each template is a Jinja string in the Hugging Face chat-template dialect, so it
goes through ``tokenizer.apply_chat_template`` exactly like a model's own
template, and the one rendering function treats both alike. All three are
prefix-stable (rendering the first turns of a conversation gives a prefix of
the whole), render tool definitions, assistant tool calls and tool results, and
close every assistant turn with an end-of-turn token so that it can be trained.

They begin with the tokenizer's BOS token only when ``add_bos`` is true: the
rendering function sets it when the tokenizer itself would add a BOS (a model
that was pre-trained with one), because text is tokenized without special
tokens and a BOS must come from exactly one place.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from tuneforge.errors import DataError

# Every tag strips the whitespace before it (`{%-`, `{{-`), so the line breaks and indentation
# below are layout only; newlines in the output are the '\n' inside Jinja string literals.
CHATML = r"""
{%- if add_bos and bos_token %}{{- bos_token }}{%- endif %}
{%- set has_system = messages and messages[0].role == 'system' %}
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if has_system %}{{- messages[0].content + '\n\n' }}{%- endif %}
    {{- '# Tools\n\nYou may call one or more functions. Their signatures are within '
        '<tools></tools>:\n<tools>' }}
    {%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}
    {{- '\n</tools>\n\nFor each call, reply with <tool_call>\n'
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif has_system %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' and loop.first %}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' + (message.content or '') }}
        {%- for call in message.tool_calls or [] %}
            {%- set fn = call.function if call.function is defined else call %}
            {%- set args = fn.arguments if fn.arguments is string else fn.arguments | tojson %}
            {%- if message.content or not loop.first %}{{- '\n' }}{%- endif %}
            {{- '<tool_call>\n{"name": "' + fn.name + '", "arguments": ' + args
                + '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + (message.content or '') + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"""

# Llama 3.1 layout: tools described in the system turn, a call is a JSON object with
# "parameters", and tool results come back under the "ipython" role.
LLAMA_3 = r"""
{%- if add_bos and bos_token %}{{- bos_token }}{%- endif %}
{%- set has_system = messages and messages[0].role == 'system' %}
{%- if tools %}
    {{- '<|start_header_id|>system<|end_header_id|>\n\n' }}
    {%- if has_system %}{{- (messages[0].content | trim) + '\n\n' }}{%- endif %}
    {{- 'You have access to the following functions. To call a function, respond with JSON '
        'of the form {"name": function name, "parameters": dictionary of argument name and '
        'its value}.\n\n' }}
    {%- for tool in tools %}{{- (tool | tojson(indent=4)) + '\n\n' }}{%- endfor %}
    {{- '<|eot_id|>' }}
{%- elif has_system %}
    {{- '<|start_header_id|>system<|end_header_id|>\n\n' + (messages[0].content | trim)
        + '<|eot_id|>' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' and loop.first %}
    {%- elif message.role == 'assistant' and message.tool_calls %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
        {%- if message.content %}{{- (message.content | trim) + '\n' }}{%- endif %}
        {%- for call in message.tool_calls %}
            {%- set fn = call.function if call.function is defined else call %}
            {%- set args = fn.arguments if fn.arguments is string else fn.arguments | tojson %}
            {%- if not loop.first %}{{- '\n' }}{%- endif %}
            {{- '{"name": "' + fn.name + '", "parameters": ' + args + '}' }}
        {%- endfor %}
        {{- '<|eot_id|>' }}
    {%- else %}
        {%- set role = 'ipython' if message.role == 'tool' else message.role %}
        {{- '<|start_header_id|>' + role + '<|end_header_id|>\n\n'
            + ((message.content or '') | trim) + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# Stanford Alpaca layout, extended to several turns; the tokenizer's EOS closes each reply
# because a base model has no other token that means "stop".
ALPACA = r"""
{%- if add_bos and bos_token %}{{- bos_token }}{%- endif %}
{%- if messages and messages[0].role == 'system' %}
    {{- messages[0].content + '\n\n' }}
{%- else %}
    {{- 'Below is an instruction that describes a task. '
        'Write a response that appropriately completes the request.\n\n' }}
{%- endif %}
{%- if tools %}
    {{- '### Tools:\n' }}
    {%- for tool in tools %}{{- (tool | tojson) + '\n' }}{%- endfor %}
    {{- 'To call a tool, respond with '
        '<tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>.\n\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' and loop.first %}
    {%- elif message.role == 'user' %}
        {{- '### Instruction:\n' + (message.content or '') + '\n\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '### Response:\n' + (message.content or '') }}
        {%- for call in message.tool_calls or [] %}
            {%- set fn = call.function if call.function is defined else call %}
            {%- set args = fn.arguments if fn.arguments is string else fn.arguments | tojson %}
            {%- if message.content or not loop.first %}{{- '\n' }}{%- endif %}
            {{- '<tool_call>{"name": "' + fn.name + '", "arguments": ' + args + '}</tool_call>' }}
        {%- endfor %}
        {{- (eos_token or '') + '\n\n' }}
    {%- elif message.role == 'tool' %}
        {{- '### Tool result:\n' + (message.content or '') + '\n\n' }}
    {%- else %}
        {{- '### ' + (message.role | capitalize) + ':\n' + (message.content or '') + '\n\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '### Response:\n' }}{%- endif %}
"""

TEMPLATES: dict[str, str] = {"chatml": CHATML, "llama-3": LLAMA_3, "alpaca": ALPACA}


def fallback_template_name(tokenizer: PreTrainedTokenizerBase) -> str:
    """The fallback whose end-of-turn token the tokenizer knows, so generation can stop.

    A vocabulary with ``<|eot_id|>`` is a Llama 3 one, ``<|im_end|>`` a ChatML one; any
    other tokenizer gets alpaca, whose replies end with the tokenizer's own EOS.
    """
    vocab = tokenizer.get_vocab()
    if "<|eot_id|>" in vocab:
        return "llama-3"
    if "<|im_end|>" in vocab:
        return "chatml"
    return "alpaca"


def fallback_template(name: str) -> str:
    """The Jinja source of a fallback template by name.

    Raises:
        DataError: the name is not one of ``chatml``, ``llama-3``, ``alpaca``.
    """
    if name not in TEMPLATES:
        choices = ", ".join(TEMPLATES)
        raise DataError(f"chat template {name!r} is unknown; choose one of {choices}")
    return TEMPLATES[name]
