"""An Ollama ``Modelfile`` whose TEMPLATE renders prompts exactly as training did.

Ollama's Go templates are written here by hand for the chat templates the project
ships (:mod:`tuneforge.data.templates`): ChatML, Llama 3 and Alpaca. The merged
model's template (the one it was trained with) is identified by rendering probe
conversations as training rendered them and through each Go template (with
:mod:`tuneforge.export.gotemplate`, on the data Ollama's server builds); the one that
gives the same text is used. :func:`write_modelfile` then proves it before writing:
golden conversations rendered by the training renderer (:func:`render_prompt`) and by
the Go template must tokenize to identical ids.

Ollama semantics followed (server and ``template`` package): a Modelfile ``SYSTEM`` is
prepended as a system message when a request has none; consecutive messages of
the same role (except ``tool``) are merged with a blank line; a template that uses
``.Messages`` is executed once over all messages; a conversation ending in an
assistant message is left open so the model continues it. The runtime, not the
template, adds the tokenizer's BOS.

Limits: assistant tool calls and tool definitions are not rendered (Ollama refuses
tool requests for a template without ``.Tools``), and the Llama 3 template's ``trim``
of message content has no Go counterpart, so content with surrounding whitespace
differs there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tuneforge.data.render import render_prompt
from tuneforge.data.sample import Message
from tuneforge.data.templates import TEMPLATES, fallback_template_name
from tuneforge.errors import ConfigError, ModelError, StageFailed
from tuneforge.export import gotemplate

MODELFILE = "Modelfile"
DEFAULT_NUM_CTX = 4096  # Ollama's own default; a shorter trained context lowers it
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
# Each loop turn knows whether it is the last message: a last non-assistant message is
# followed by the generation prompt, a last assistant message is left open (prefill).
# Line breaks before `{{-` are layout (trimmed); every other newline is output.
_LAST = """\
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
"""
CHATML_GO = (
    _LAST
    + """\
{{- if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ if $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- end }}"""
)
LLAMA_3_GO = (
    _LAST
    + """\
{{- if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>

{{ .Content }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else }}<|start_header_id|>{TOOL_ROLE}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""
)
ALPACA_GO = (
    _LAST
    + """\
{{- if and (eq $i 0) (eq .Role "system") }}{{ .Content }}

{{ if $last }}### Response:
{{ end }}
{{- else }}
{{- if eq $i 0 }}"""
    + ALPACA_PREAMBLE
    + """

{{ end }}
{{- if eq .Role "assistant" }}### Response:
{{ .Content }}{{ if not $last }}{EOS}

{{ end }}
{{- else }}
{{- if eq .Role "user" }}### Instruction:
{{- else if eq .Role "tool" }}### Tool result:
{{- else }}### System:
{{- end }}
{{ .Content }}

{{ if $last }}### Response:
{{ end }}
{{- end }}
{{- end }}
{{- end }}"""
)
# Llama 3.1 (and the project's fallback) names tool results "ipython"; Llama 3.0 keeps "tool".
_IPYTHON = '{{ if eq .Role "tool" }}ipython{{ else }}{{ .Role }}{{ end }}'
END_OF_TURN = {"chatml": "<|im_end|>", "llama-3": "<|eot_id|>", "alpaca": None}
# HF generation_config keys -> Ollama PARAMETER names (sampling ones only with do_sample).
_SAMPLING = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k"}
_ALWAYS = {"repetition_penalty": "repeat_penalty", "max_new_tokens": "num_predict"}

# Every probe asks for a reply: Ollama leaves a final assistant message open, HF closes it.
_PROBES: list[list[Message]] = [
    [
        {"role": "system", "content": "Answer in one line."},
        {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": "It ships today."},
        {"role": "user", "content": "Thanks!"},
    ],
    [{"role": "user", "content": "Hello there."}],
    [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "Checking."},
        {"role": "tool", "content": "4 degrees"},
    ],
]
GOLDEN: list[list[Message]] = [
    [
        {"role": "system", "content": "You are a terse support agent."},
        {"role": "user", "content": "My order #1234 has not arrived. What now?"},
    ],
    [{"role": "user", "content": "Summarise: the cat sat on the mat."}],
    [
        {"role": "system", "content": "Reply in English."},
        {"role": "user", "content": "Is the shop open on Sunday?"},
        {"role": "assistant", "content": "Yes, from 10:00 to 16:00."},
        {"role": "user", "content": "And on public holidays?"},
        {"role": "assistant", "content": "No, it is closed then."},
        {"role": "user", "content": "Thanks.\nOne more:\n- returns?"},
    ],
    [
        {"role": "user", "content": "Convert 3 km to miles."},
        {"role": "assistant", "content": "About 1.86 miles."},
        {"role": "user", "content": "And 10 km?"},
    ],
    [
        {"role": "user", "content": "What is the weather?"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "tool", "content": '{"temp_c": 21}'},
    ],
]


@dataclass
class OllamaMessage:
    """A chat message as Ollama's templates see it (its Go ``api.Message`` fields)."""

    Role: str
    Content: str
    Thinking: str = ""
    Images: list[Any] = field(default_factory=list)
    ToolCalls: list[Any] = field(default_factory=list)
    ToolName: str = ""


def write_modelfile(
    merged_dir: Path,
    out_dir: Path,
    gguf_name: str,
    *,
    system: str | None = None,
    params: dict[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/Modelfile`` for the GGUF file of the merged model.

    Args:
        merged_dir: The merged Hugging Face folder (tokenizer with its chat template,
            ``generation_config.json``, ``config.json``).
        out_dir: Folder to write the Modelfile into (created).
        gguf_name: The GGUF file's path relative to ``out_dir``
            (``FROM ./<gguf_name>``), e.g. ``gguf/model-q8_0.gguf``.
        system: A default system prompt (Ollama uses it when a request has none).
        params: Extra or overriding ``PARAMETER`` values; a list writes one line per item.

    Returns:
        The Modelfile's path.

    Raises:
        ConfigError: the chat template is none of ChatML, Llama 3, Alpaca, or ``system``
            or a parameter cannot be written into a Modelfile.
        StageFailed: the TEMPLATE does not reproduce the training renderer's prompt ids.
    """
    merged_dir, out_dir = Path(merged_dir), Path(out_dir)
    tokenizer = _load_tokenizer(merged_dir)
    name, template = detect_template(tokenizer, where=str(merged_dir))
    check_template_parity(tokenizer, template)
    generation = _read_json(merged_dir / "generation_config.json")
    config = _read_json(merged_dir / "config.json")
    parameters = {"stop": stop_strings(tokenizer, generation, name)}
    parameters |= default_parameters(generation, config)
    parameters |= params or {}
    lines = [
        f"# Written by tuneforge. Chat template: {name}, the one the model was trained with;",
        "# checked token for token against the training renderer on golden conversations.",
        f"FROM ./{Path(gguf_name).as_posix()}",
        f'TEMPLATE """{template}"""',
    ]
    if system:
        lines.append(f'SYSTEM """{_triple_quotable(system, "system")}"""')
    lines += _parameter_lines(parameters)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / MODELFILE
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def detect_template(
    tokenizer: PreTrainedTokenizerBase, where: str = "the tokenizer"
) -> tuple[str, str]:
    """The shipped template the tokenizer's chat template is, and its Go TEMPLATE.

    The probe conversations are rendered as training rendered them (the tokenizer's
    Jinja template, or the named fallback) and through each candidate Go template on
    Ollama's template data; the candidate that gives the same text is the answer.

    Args:
        tokenizer: The merged model's tokenizer.
        where: Named in the error message (the model folder).

    Returns:
        The template name (``chatml``, ``llama-3``, ``alpaca``) and the Go TEMPLATE. It
        starts with the BOS text only where training wrote a BOS the runtime would not add.

    Raises:
        ConfigError: the template renders the probes like none of the candidates.
    """
    try:
        own = [training_text(tokenizer, messages) for messages in _PROBES]
    except (TemplateError, TypeError, ValueError):  # a template that rejects the probes
        own = []
    bos = tokenizer.bos_token or ""
    with_bos = bool(own) and bool(bos) and all(text.startswith(bos) for text in own)
    own = [text[len(bos) :] for text in own] if with_bos else own
    prefix = bos if with_bos and not tokenizer_adds_bos(tokenizer) else ""
    for name, template in go_templates(tokenizer).items():
        if [gotemplate.render(template, ollama_values(m)) for m in _PROBES] == own:
            return name.split("/")[0], prefix + template
    choices = ", ".join(TEMPLATES)
    raise ConfigError(
        f"the chat template of {where} is none of {choices}, the templates an Ollama "
        "Modelfile reproduces exactly; train with data.template set to one of them, or drop "
        "ollama from export.formats"
    )


def go_templates(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """Candidate Go TEMPLATEs by name (Alpaca closes replies with the tokenizer's EOS)."""
    return {
        "chatml": CHATML_GO,
        "llama-3": LLAMA_3_GO.replace("{TOOL_ROLE}", _IPYTHON),
        "llama-3/tool-role": LLAMA_3_GO.replace("{TOOL_ROLE}", "{{ .Role }}"),
        "alpaca": ALPACA_GO.replace("{EOS}", tokenizer.eos_token or ""),
    }


def training_text(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> str:
    """The prompt text training's renderer builds for ``messages`` (before tokenizing)."""
    name = training_template_name(tokenizer)
    extra = {"add_bos": tokenizer_adds_bos(tokenizer)} if name else {}
    return tokenizer.apply_chat_template(
        messages,
        chat_template=TEMPLATES[name] if name else None,
        tokenize=False,
        add_generation_prompt=True,
        **extra,
    )


def ollama_values(messages: list[Message], system: str | None = None) -> dict[str, Any]:
    """The data Ollama executes a ``.Messages`` template with, for a chat request.

    Args:
        messages: The request's messages (OpenAI schema).
        system: The Modelfile's ``SYSTEM``; prepended when the first message is not one.

    Returns:
        Ollama's template variables: ``System`` (every system message, joined by a blank
        line), ``Messages`` (consecutive same-role messages merged, except ``tool``),
        ``Tools``, ``Response``, ``Think``.
    """
    messages = list(messages)
    if system and (not messages or messages[0]["role"] != "system"):
        messages.insert(0, {"role": "system", "content": system})
    systems: list[str] = []
    collated: list[OllamaMessage] = []
    for message in messages:
        role, content = message["role"], _text(message.get("content"))
        if role == "system":
            systems.append(content)
        if collated and collated[-1].Role == role and role != "tool":
            collated[-1].Content += "\n\n" + content
        else:
            collated.append(OllamaMessage(Role=role, Content=content))
    return {
        "System": "\n\n".join(systems),
        "Messages": collated,
        "Tools": None,
        "Response": "",
        "Think": False,
        "IsThinkSet": False,
    }


def modelfile_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    messages: list[Message],
    system: str | None = None,
) -> list[int]:
    """Prompt ids Ollama feeds the model: the rendered TEMPLATE tokenized whole, plus BOS."""
    text = gotemplate.render(template, ollama_values(messages, system))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.bos_token_id, *ids] if tokenizer_adds_bos(tokenizer) else ids


def check_template_parity(
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    conversations: list[list[Message]] | None = None,
) -> int:
    """Require the TEMPLATE's prompt ids to equal the training renderer's.

    Returns:
        The number of conversations compared.

    Raises:
        StageFailed: a conversation tokenizes differently, naming it and the first
            differing position.
    """
    conversations = GOLDEN if conversations is None else conversations
    trained_with = training_template_name(tokenizer)
    for index, messages in enumerate(conversations):
        expected = render_prompt(tokenizer, messages, template=trained_with)
        got = modelfile_prompt_ids(tokenizer, template, messages)
        if got != expected:
            at = next(
                (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                min(len(got), len(expected)),
            )
            raise StageFailed(
                f"the Modelfile TEMPLATE renders golden conversation {index} to other tokens "
                f"than training did (first difference at token {at} of {len(expected)})"
            )
    return len(conversations)


def stop_strings(
    tokenizer: PreTrainedTokenizerBase, generation: dict[str, Any], name: str
) -> list[str]:
    """Every stop/EOS token as text: generation EOS ids, the tokenizer's EOS, end of turn."""
    configured = generation.get("eos_token_id")
    ids = configured if isinstance(configured, list) else [configured]
    texts = [tokenizer.decode([i]) for i in [*ids, tokenizer.eos_token_id] if i is not None]
    texts.append(END_OF_TURN[name] or tokenizer.eos_token or "")
    return [text for text in dict.fromkeys(texts) if text.strip()]


def default_parameters(generation: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``num_ctx`` from the trained context; sampling settings from generation_config.

    Sampling values are used only when generation_config samples (``do_sample``); a greedy
    model keeps Ollama's sampling defaults (pass ``temperature: 0`` to decode greedily).
    """
    parameters: dict[str, Any] = {}
    trained = config.get("max_position_embeddings")
    parameters["num_ctx"] = min(trained, DEFAULT_NUM_CTX) if trained else DEFAULT_NUM_CTX
    keys = dict(_ALWAYS) | (_SAMPLING if generation.get("do_sample") else {})
    for key, ollama_key in keys.items():
        if generation.get(key) is not None:
            parameters[ollama_key] = generation[key]
    return parameters


def training_template_name(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The fallback name training rendered with, or None for the tokenizer's own template.

    A merged folder carries a fallback's Jinja source as its chat template when training
    named one (``data.template``); training rendered it by name, which writes the BOS the
    tokenizer would add, so the reference prompt is rendered by name too.
    """
    source = tokenizer.chat_template
    if not source:
        return fallback_template_name(tokenizer)
    return next((name for name, text in TEMPLATES.items() if text == source), None)


def tokenizer_adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether encoding with special tokens starts with BOS (the runtime adds it then)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def _parameter_lines(parameters: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in parameters.items():
        if not key.replace("_", "").isalnum():
            raise ConfigError(f"Ollama parameter name {key!r} must be letters, digits and _")
        for item in value if isinstance(value, list | tuple) else [value]:
            lines.append(f"PARAMETER {key} {_parameter_value(item)}")
    return lines


def _parameter_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if '"' in text or "\n" in text:
        return f'"""{_triple_quotable(text, "parameter")}"""'
    return f'"{text}"'


def _triple_quotable(text: str, what: str) -> str:
    if '"""' in text:
        raise ConfigError(
            f'the Ollama {what} {text[:40]!r} contains """, which a Modelfile '
            "cannot quote; remove it"
        )
    return text


def _text(content: Any) -> str:
    if isinstance(content, list):  # a text-only model sees the text parts, in order
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as err:
        raise ModelError(f"{folder}: no loadable tokenizer ({err})") from None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
