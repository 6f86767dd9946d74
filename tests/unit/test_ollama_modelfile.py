"""The Ollama Modelfile: Go-template semantics, Ollama's template data, and template parity.

Parity means: golden conversations rendered by the training renderer and by the
Modelfile's TEMPLATE (read back from the written file, rendered with Go semantics on
the data Ollama's server builds, tokenized whole as the runtime does) give identical
token ids, for each template the project ships.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.unit.test_templates import LLAMA2, LLAMA3, QWEN25, style

from tuneforge.data.render import render_chat, render_prompt
from tuneforge.data.templates import fallback_template
from tuneforge.errors import ConfigError, StageFailed
from tuneforge.export import gotemplate
from tuneforge.export.gotemplate import GoTemplateError
from tuneforge.export.ollama import (
    CHATML_GO,
    GOLDEN,
    OllamaMessage,
    check_template_parity,
    ollama_values,
    write_modelfile,
)

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


# --- Go text/template semantics ------------------------------------------------------------


@dataclass
class Struct:
    Role: str


@pytest.mark.parametrize(
    ("source", "data", "expected"),
    [
        ("a  {{- 1 -}}  b", {}, "a1b"),
        ("a \n{{- 1 }} \nb", {}, "a1 \nb"),
        ("a {{ 1 -}}\n\t b", {}, "a 1b"),
        ("{{-1}}", {}, "-1"),  # a trim marker needs a space after it
        ("x {{- /* a comment */ -}} y", {}, "xy"),
        ('{{ "a\\tb\\n" }}|{{ `raw\\n` }}', {}, "a\tb\n|raw\\n"),
        ("{{ .Missing }}|{{ .Set }}", {"Set": None}, "<no value>|<no value>"),
        ("{{ true }} {{ 1.5 }} {{ 2.0 }} {{ .L }}", {"L": [1, "a"]}, "true 1.5 2 [1 a]"),
        ('{{ and 1 0 }} {{ and 1 2 }} {{ or 0 "" }} {{ or "" "x" }}', {}, "0 2  x"),
        ("{{ and false (index .L 9) }}", {"L": []}, "false"),  # lazy: index is never run
        ('{{ not .L }} {{ not 0 }} {{ not "a" }}', {"L": []}, "true true false"),
        (
            '{{ eq .X 1 2 3 }} {{ eq .X 1 2 }} {{ ne .S "a" }}',
            {"X": 3, "S": "a"},
            "true false false",
        ),
        ('{{ len "é" }} {{ len .L }} {{ .L | len }}', {"L": [1, 2, 3]}, "2 3 3"),
        ("{{ slice .L 1 }} {{ slice .L 1 2 }} {{ index .L 2 }}", {"L": [1, 2, 3]}, "[2 3] [2] 3"),
        ("{{ (index .M 0).Role }}|{{ $.M }}", {"M": []}, None),
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", {}, "2"),
        ("{{ if $y := .Y }}{{ $y }}{{ else }}no {{ $y }}{{ end }}", {"Y": 0}, "no 0"),
    ],
)
def test_go_template_semantics(source: str, data: dict, expected: str | None) -> None:
    if expected is None:  # index out of range on an empty list is an error in Go
        with pytest.raises(GoTemplateError, match="index out of range"):
            gotemplate.render(source, data)
        return
    assert gotemplate.render(source, data) == expected


@pytest.mark.parametrize(("x", "expected"), [(1, "one"), (2, "two"), (5, "many")])
def test_else_if_chains_take_the_first_true_branch(x: int, expected: str) -> None:
    source = "{{ if eq .X 1 }}one{{ else if eq .X 2 }}two{{ else }}many{{ end }}"
    assert gotemplate.render(source, {"X": x}) == expected


def test_range_binds_index_element_dot_and_root() -> None:
    data = {"Sep": "/", "L": [Struct("user"), Struct("assistant")], "E": []}
    source = (
        "{{ range $i, $m := .L }}{{ $i }}:{{ .Role }}={{ $m.Role }}{{ $.Sep }}{{ end }}"
        "{{ range .E }}x{{ else }}empty{{ end }}"
        "{{ range $m := .L }}{{ $m.Role }};{{ end }}"
        "{{ range $k, $v := .D }}{{ $k }}{{ $v }}{{ end }}"
        "{{ range 3 }}{{ . }}{{ end }}"
    )
    data["D"] = {"b": 2, "a": 1}  # maps range in sorted key order
    assert gotemplate.render(source, data) == (
        "0:user=user/1:assistant=assistant/emptyuser;assistant;a1b2012"
    )


def test_last_message_idiom_of_ollama_templates() -> None:
    source = (
        "{{- range $i, $_ := .L }}{{- $last := eq (len (slice $.L $i)) 1 }}"
        "{{ . }}{{ if $last }}!{{ else }},{{ end }}{{- end }}"
    )
    assert gotemplate.render(source, {"L": ["a", "b", "c"]}) == "a,b,c!"


@pytest.mark.parametrize(
    ("source", "data", "message"),
    [
        ("{{ .X.Nope }}", {"X": Struct("user")}, "can't evaluate field Nope"),
        ("{{ .X.Y }}", {}, "nil pointer evaluating"),
        ('{{ eq "a" 1 }}', {}, "incompatible types for comparison"),
        ("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", {}, "undefined variable: $y"),
        ("{{ with .X }}{{ end }}", {}, "outside the supported subset"),
        ("{{ upper .X }}", {}, 'function "upper" not defined'),
        ("{{ if .X }}open", {}, "has no {{end}}"),
        ("{{ end }}", {}, "unexpected {{end}}"),
        ("{{ .X", {}, "unclosed action"),
        ("{{ 1 2 }}", {}, "can't give argument to non-function"),
    ],
)
def test_errors_are_one_line(source: str, data: dict, message: str) -> None:
    with pytest.raises(GoTemplateError, match=re.escape(message)) as caught:
        gotemplate.render(source, data)
    assert "\n" not in str(caught.value)


# --- Ollama's template data ----------------------------------------------------------------


def test_ollama_values_follow_the_server_and_collate() -> None:
    user = {"role": "user", "content": "hi"}
    values = ollama_values([user, {"role": "user", "content": "again"}], system="Be brief.")
    assert values["System"] == "Be brief."
    assert [(m.Role, m.Content) for m in values["Messages"]] == [
        ("system", "Be brief."),
        ("user", "hi\n\nagain"),  # consecutive same-role messages are merged
    ]
    own = [{"role": "system", "content": "Mine."}, user]
    assert [m.Content for m in ollama_values(own, system="Default.")["Messages"]] == [
        "Mine.",
        "hi",
    ]
    tools = [{"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}]
    assert len(ollama_values(tools)["Messages"]) == 2  # tool results stay separate


# --- the Modelfile -------------------------------------------------------------------------


def merged_folder(path: Path, tokenizer, *, generation: dict | None = None) -> Path:
    """What write_modelfile reads from a merged folder: tokenizer and two configs."""
    tokenizer.save_pretrained(path)
    (path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    gen = {"eos_token_id": eos, **(generation or {})}
    (path / "generation_config.json").write_text(json.dumps(gen))
    return path


def parse_modelfile(text: str) -> dict[str, list[str]]:
    """Commands as Ollama's parser reads them: one line, or a \"\"\"-quoted block."""
    commands: dict[str, list[str]] = {}
    for match in re.finditer(r'(?m)^([A-Z]+) ("""[\s\S]*?"""|[^\n]*)$', text):
        name, arg = match.groups()
        if name == "PARAMETER":
            key, arg = arg.split(" ", 1)
            name = f"PARAMETER {key}"
        arg = arg[3:-3] if arg.startswith('"""') else arg.strip('"')
        commands.setdefault(name, []).append(arg)
    return commands


def tokenizer_with(base, template_name: str, *, specials: bool):
    tokenizer = copy.deepcopy(base)
    if specials:
        tokenizer.add_tokens(LLAMA3_SPECIALS, special_tokens=True)
    tokenizer.chat_template = fallback_template(template_name)
    return tokenizer


def ollama_ids(tokenizer, template: str, messages: list, system: str | None = None) -> list[int]:
    text = gotemplate.render(template, ollama_values(messages, system))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids if tokenizer.bos_token_id is None else [tokenizer.bos_token_id, *ids]


@pytest.mark.parametrize(
    ("name", "specials"),
    [("chatml", False), ("llama-3", False), ("llama-3", True), ("alpaca", False)],
)
def test_template_parity_with_the_training_renderer(chat_tokenizer, tmp_path, name, specials):
    tokenizer = tokenizer_with(chat_tokenizer, name, specials=specials)
    path = write_modelfile(merged_folder(tmp_path, tokenizer), tmp_path, "model.gguf")
    template = parse_modelfile(path.read_text())["TEMPLATE"][0]
    compared = 0
    for messages in GOLDEN:
        expected = render_prompt(tokenizer, messages)
        assert ollama_ids(tokenizer, template, messages) == expected
        compared += len(expected)
    # a Modelfile SYSTEM reaches the prompt exactly as a system message would
    user = [{"role": "user", "content": "Hi!"}]
    system = {"role": "system", "content": "Be kind."}
    assert ollama_ids(tokenizer, template, user, "Be kind.") == render_prompt(
        tokenizer, [system, *user]
    )
    assert compared > 150


@pytest.mark.parametrize(
    ("name", "rest"),
    [("chatml", "<|im_end|>\n"), ("llama-3", "<|eot_id|>"), ("alpaca", "<|im_end|>\n\n")],
)
def test_a_final_assistant_message_is_continued_not_closed(chat_tokenizer, tmp_path, name, rest):
    tokenizer = tokenizer_with(chat_tokenizer, name, specials=name == "llama-3")
    path = write_modelfile(merged_folder(tmp_path, tokenizer), tmp_path, "model.gguf")
    template = parse_modelfile(path.read_text())["TEMPLATE"][0]
    messages = [
        {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": "It ships"},
    ]
    trained = render_chat(tokenizer, messages).input_ids
    prefill = ollama_ids(tokenizer, template, messages)
    assert trained[: len(prefill)] == prefill
    assert tokenizer.decode(trained[len(prefill) :]) == rest  # only the end of turn is left


def test_meta_llama3_template_keeps_one_bos(chat_tokenizer, tmp_path) -> None:
    tokenizer = style(
        chat_tokenizer,
        LLAMA3,
        specials=LLAMA3_SPECIALS,
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        add_bos=True,
    )
    path = write_modelfile(merged_folder(tmp_path, tokenizer), tmp_path, "model.gguf")
    commands = parse_modelfile(path.read_text())
    template = commands["TEMPLATE"][0]
    assert "<|begin_of_text|>" not in template  # the runtime adds BOS, as the tokenizer does
    for messages in GOLDEN:
        ids = ollama_ids(tokenizer, template, messages)
        assert ids == render_prompt(tokenizer, messages)
        assert ids.count(tokenizer.bos_token_id) == 1
    assert "<|eot_id|>" in commands["PARAMETER stop"]
    assert "ipython" not in template  # Llama 3.0 names tool results "tool", as its template does


def test_parity_check_catches_a_template_that_drifts(chat_tokenizer) -> None:
    tokenizer = tokenizer_with(chat_tokenizer, "chatml", specials=False)
    assert check_template_parity(tokenizer, CHATML_GO) == len(GOLDEN) == 5
    drifted = CHATML_GO.replace("<|im_end|>\n{{ end }}", "<|im_end|>{{ end }}")  # no newline
    with pytest.raises(StageFailed, match=r"golden conversation 2 .* token 65 of 136"):
        check_template_parity(tokenizer, drifted)


def test_a_system_prompt_a_modelfile_cannot_quote_is_refused(chat_tokenizer, tmp_path) -> None:
    tokenizer = tokenizer_with(chat_tokenizer, "chatml", specials=False)
    with pytest.raises(ConfigError, match='contains """') as caught:
        write_modelfile(merged_folder(tmp_path, tokenizer), tmp_path, "m.gguf", system='a"""b')
    assert "\n" not in str(caught.value)


def test_modelfile_lines_stops_and_parameters(chat_tokenizer, tmp_path) -> None:
    chatml = tokenizer_with(chat_tokenizer, "chatml", specials=False)
    generation = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}
    merged = merged_folder(tmp_path / "merged", chatml, generation=generation)
    path = write_modelfile(
        merged,
        tmp_path / "export",
        "gguf/m-q8_0.gguf",
        system="You help with parcels.",
        params={"top_k": 20, "stop": ["<|im_end|>", "<|im_start|>"]},
    )
    commands = parse_modelfile(path.read_text())
    assert path == tmp_path / "export" / "Modelfile"
    assert commands["FROM"] == ["./gguf/m-q8_0.gguf"]
    assert commands["SYSTEM"] == ["You help with parcels."]
    assert commands["PARAMETER stop"] == ["<|im_end|>", "<|im_start|>"]  # params override
    assert commands["PARAMETER temperature"] == ["0.7"]
    assert commands["PARAMETER top_p"] == ["0.9"]
    assert commands["PARAMETER top_k"] == ["20"]
    assert commands["PARAMETER repeat_penalty"] == ["1.1"]
    assert commands["PARAMETER num_ctx"] == ["512"]


@pytest.mark.parametrize(
    ("name", "stops"),
    [
        ("chatml", ["<|im_end|>"]),
        ("llama-3", ["<|im_end|>", "<|eot_id|>"]),
        ("alpaca", ["<|im_end|>"]),
    ],
)
def test_stop_tokens_cover_eos_ids_and_end_of_turn(chat_tokenizer, tmp_path, name, stops):
    tokenizer = tokenizer_with(chat_tokenizer, name, specials=name == "llama-3")
    path = write_modelfile(merged_folder(tmp_path, tokenizer), tmp_path, "model.gguf")
    commands = parse_modelfile(path.read_text())
    assert commands["PARAMETER stop"] == stops
    assert "PARAMETER temperature" not in commands  # a greedy generation_config keeps defaults


PLAIN = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"


@pytest.mark.parametrize("template", [LLAMA2, QWEN25, PLAIN])
def test_an_unknown_template_is_a_one_line_error(chat_tokenizer, tmp_path, template) -> None:
    tokenizer = style(chat_tokenizer, template, specials=["<s>", "</s>"], bos="<s>", eos="</s>")
    merged = merged_folder(tmp_path, tokenizer)
    with pytest.raises(ConfigError, match="none of chatml, llama-3, alpaca") as caught:
        write_modelfile(merged, tmp_path, "model.gguf")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "Modelfile").exists()


# --- the renderer against Go itself, where a Go toolchain is installed ---------------------

GO_PROGRAM = r"""
package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string
	Content string
}

func convert(v any) any {
	switch x := v.(type) {
	case float64:
		if x == float64(int(x)) {
			return int(x)
		}
	case []any:
		for i := range x {
			x[i] = convert(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = convert(x[k])
		}
	}
	return v
}

func main() {
	var cases []struct {
		Source string
		Data   map[string]any
	}
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	results := []map[string]any{}
	for _, c := range cases {
		data := convert(c.Data).(map[string]any)
		if raw, ok := data["Messages"].([]any); ok {
			messages := []*Message{}
			for _, m := range raw {
				fields := m.(map[string]any)
				role, content := fields["Role"].(string), fields["Content"].(string)
				messages = append(messages, &Message{Role: role, Content: content})
			}
			data["Messages"] = messages
		}
		var out strings.Builder
		t, err := template.New("").Option("missingkey=zero").Parse(c.Source)
		if err == nil {
			err = t.Execute(&out, data)
		}
		results = append(results, map[string]any{"out": out.String(), "failed": err != nil})
	}
	json.NewEncoder(os.Stdout).Encode(results)
}
"""
GO_CASES = [
    ("a  {{- 1 -}}  b", {}),
    ("a \n{{- 1 }} \nb", {}),
    ("{{-1}}|{{ 1 -}}\n\t b", {}),
    ("x {{- /* a comment */ -}} y", {}),
    ('{{ "a\\tb\\n\\u00e9" }}|{{ `raw\\n` }}', {}),
    ("{{ .Missing }}|{{ .Set }}", {"Set": None}),
    ("{{ true }} {{ 1.5 }} {{ 2.0 }} {{ .L }}", {"L": [1, "a"]}),
    (
        '{{ and 1 0 }} {{ and 1 2 }} {{ or 0 "" }} {{ or "" "x" }} {{ and false (index .L 9) }}',
        {"L": []},
    ),
    (
        '{{ not .L }} {{ not 0 }} {{ not "a" }} {{ eq .X 1 2 3 }} {{ ne .S "a" }}',
        {"L": [], "X": 3, "S": "a"},
    ),
    (
        '{{ len "é" }} {{ .L | len }} {{ slice .L 1 }} {{ slice .L 1 2 }} {{ index .L 2 }}',
        {"L": [1, 2, 3]},
    ),
    ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", {}),
    ("{{ if $y := .Y }}{{ $y }}{{ else }}no {{ $y }}{{ end }}", {"Y": 0}),
    (
        "{{ range $i, $m := .Messages }}{{ $i }}{{ .Role }}{{ $m.Content }}{{ $.S }}{{ end }}",
        {"S": "/", "Messages": [{"Role": "user", "Content": "a"}, {"Role": "x", "Content": "b"}]},
    ),
    (
        "{{ range .E }}x{{ else }}empty{{ end }}{{ range $k, $v := .D }}{{ $k }}{{ $v }}{{ end }}",
        {"E": [], "D": {"b": 2, "a": 1}},
    ),
    ("{{ (index .Messages 0).Role }}", {"Messages": []}),
    ("{{ (index .Messages 0).Nope }}", {"Messages": [{"Role": "user", "Content": ""}]}),
    ("{{ .X.Y }}", {}),
    ('{{ eq "a" 1 }}', {}),
    ("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", {}),
    ("{{ 1 2 }}", {}),
]


def python_side(data: dict) -> dict:
    """The same data with Messages as structs (Go gets *Message values)."""
    if "Messages" in data:
        messages = [OllamaMessage(Role=m["Role"], Content=m["Content"]) for m in data["Messages"]]
        return {**data, "Messages": messages}
    return data


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("go") is None, reason="needs a Go toolchain")
def test_renderer_agrees_with_go_text_template(chat_tokenizer, tmp_path) -> None:
    cases = list(GO_CASES)
    for name, specials in [("chatml", False), ("llama-3", True), ("alpaca", False)]:
        tokenizer = tokenizer_with(chat_tokenizer, name, specials=specials)
        folder = merged_folder(tmp_path / name, tokenizer)
        path = write_modelfile(folder, tmp_path / name, "model.gguf")
        template = parse_modelfile(path.read_text())["TEMPLATE"][0]
        for messages in [
            *GOLDEN,
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        ]:
            values = ollama_values(messages, system="Be kind.")
            plain = [{"Role": m.Role, "Content": m.Content} for m in values["Messages"]]
            cases.append((template, {**values, "Messages": plain}))
    program = tmp_path / "main.go"
    program.write_text(GO_PROGRAM)
    payload = json.dumps([{"Source": source, "Data": data} for source, data in cases])
    done = subprocess.run(
        ["go", "run", str(program)], input=payload, capture_output=True, text=True, check=True
    )
    for (source, data), go in zip(cases, json.loads(done.stdout), strict=True):
        try:
            ours, failed = gotemplate.render(source, python_side(data)), False
        except GoTemplateError:
            ours, failed = "", True
        assert failed == go["failed"], source
        if not failed:
            assert ours == go["out"], source
