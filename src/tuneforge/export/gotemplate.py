"""A renderer for the subset of Go's ``text/template`` that Ollama chat templates use.

Ollama renders a Modelfile's ``TEMPLATE`` with Go's ``text/template`` (option
``missingkey=zero``). This module follows that package's semantics for the
constructs the exported Modelfiles use, so the rendered prompt can be compared
with the training renderer's without the ``ollama`` binary:

- text and ``{{ pipeline }}`` actions; ``{{-`` / ``-}}`` trim all ASCII whitespace
  (space, tab, CR, LF) before / after the action; ``{{/* comments */}}``;
- ``if`` / ``else if`` / ``else`` / ``end``; ``range`` with ``else``, over a list, a map
  (sorted keys) or an int, binding ``$m`` or ``$i, $m``;
- variables ``$``, ``$x := ...`` and ``$x = ...``, scoped to their control block;
- fields ``.A.B`` on the dot, on variables (``$.Messages``, ``$m.Role``) and on
  parenthesised pipelines; pipes ``a | f``;
- literals: interpreted and raw strings, integers, floats, ``true``, ``false``, ``nil``;
- functions ``and`` and ``or`` (lazy, returning the deciding argument), ``not``, ``eq``
  (with several right-hand operands), ``ne``, ``len``, ``index``, ``slice``.

Data is Python values: a ``dict`` is a Go map (a missing key is nil, printed
``<no value>``), any other object a struct whose fields are attributes (a missing
field is an error), as in Go. Anything outside the subset is a one-line
:class:`GoTemplateError` rather than a silent difference. Values and builtins live in
:mod:`tuneforge.export.gofuncs`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tuneforge.export.gofuncs import GoTemplateError, call, field, format_value, truth

SPACE = " \t\r\n"
_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<string>"(?:[^"\\\n]|\\.)*")
    |(?P<raw>`[^`]*`)
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    |(?P<declare>:=)
    |(?P<punct>[()|,=])
    |(?P<var>\$[A-Za-z_]\w*|\$)
    |(?P<field>(?:\.[A-Za-z_]\w*)+|\.)
    |(?P<ident>[A-Za-z_]\w*)""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a"}
_ESCAPES |= {"b": "\b", "f": "\f", "v": "\v"}
_UNSUPPORTED = {"with", "define", "template", "block", "break", "continue"}


@dataclass(frozen=True)
class _Token:
    kind: str
    value: Any
    start: int
    end: int


@dataclass(frozen=True)
class _Pipe:
    names: tuple[str, ...]  # declared or assigned variables
    assign: bool  # `=` rather than `:=`
    commands: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class _Field:
    receiver: Any  # "." for the dot, a variable name, or a sub-pipeline
    chain: tuple[str, ...]


@dataclass(frozen=True)
class _Const:
    value: Any


@dataclass(frozen=True)
class _Func:
    name: str


@dataclass(frozen=True)
class _Output:
    pipe: _Pipe


@dataclass(frozen=True)
class _If:
    branches: tuple[tuple[_Pipe, list[Any]], ...]
    otherwise: list[Any]


@dataclass(frozen=True)
class _Range:
    pipe: _Pipe
    body: list[Any]
    otherwise: list[Any]


def render(source: str, data: Any) -> str:
    """Render a Go template with ``data`` as the dot (and ``$``).

    Args:
        source: Template text in Go ``text/template`` syntax (the subset above).
        data: The value of the dot: usually a ``dict`` of Ollama's template variables.

    Returns:
        The rendered text.

    Raises:
        GoTemplateError: a construct outside the subset, a syntax error, or an
            evaluation error (unknown field, bad comparison, undefined variable).
    """
    return _Executor(data).run(parse(source))


def parse(source: str) -> list[Any]:
    """Parse a template into its node list; see :func:`render`."""
    parser = _Parser(_items(source))
    nodes, end, _ = parser.block()
    if end != "eof":
        raise GoTemplateError(f"unexpected {{{{{end}}}}} outside if/range")
    return nodes


def _items(source: str) -> list[str | list[_Token]]:
    """Split into text and actions (as token lists), applying the trim markers."""
    items: list[str | list[_Token]] = []
    position, trim_next = 0, False
    while True:
        start = source.find("{{", position)
        text = source[position : start if start >= 0 else len(source)]
        if trim_next:
            text = text.lstrip(SPACE)
        if start < 0:
            items.append(text)
            return items
        inner = start + 2
        if source[inner : inner + 1] == "-" and source[inner + 1 : inner + 2] in tuple(SPACE):
            text, inner = text.rstrip(SPACE), inner + 1
        items.append(text)
        end = _action_end(source, inner)
        action = source[inner:end]
        trim_next = len(action) >= 2 and action[-1] == "-" and action[-2] in SPACE
        if trim_next:
            action = action[:-1]
        position = end + 2
        if not action.strip().startswith("/*"):
            items.append(_tokens(action))
        elif not action.strip().endswith("*/"):
            raise GoTemplateError(f"unclosed comment at offset {start}")


def _action_end(source: str, start: int) -> int:
    """Offset of the ``}}`` closing the action that starts at ``start``, skipping strings."""
    index = start
    while index < len(source):
        char = source[index]
        if source.startswith("}}", index):
            return index
        if char in '"`':
            close = source.find(char, index + 1)
            while char == '"' and close > 0 and _escaped(source, close):
                close = source.find(char, close + 1)
            if close < 0:
                break
            index = close
        index += 1
    raise GoTemplateError(f"unclosed action at offset {start - 2}")


def _escaped(source: str, index: int) -> bool:
    backslashes = len(source[:index]) - len(source[:index].rstrip("\\"))
    return backslashes % 2 == 1


def _tokens(action: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(action):
        match = _TOKEN.match(action, position)
        if match is None:
            raise GoTemplateError(f"unexpected {action[position]!r} in action {action.strip()!r}")
        kind, text = match.lastgroup or "", match.group()
        position = match.end()
        if kind == "space":
            continue
        value: Any = text
        if kind == "string":
            value, kind = _unquote(text[1:-1]), "const"
        elif kind == "raw":
            value, kind = text[1:-1], "const"
        elif kind == "number":
            value, kind = (float(text) if any(c in text for c in ".eE") else int(text)), "const"
        elif kind == "ident" and text in ("true", "false", "nil"):
            value, kind = {"true": True, "false": False, "nil": None}[text], "const"
        tokens.append(_Token(kind, value, match.start(), match.end()))
    return tokens


def _unquote(body: str) -> str:
    def escape(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "xuU":
            return chr(int(code[1:], 16))
        if code[0].isdigit():
            return chr(int(code, 8))
        if code not in _ESCAPES:
            raise GoTemplateError(f"unknown escape sequence \\{code}")
        return _ESCAPES[code]

    pattern = r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)"
    return re.sub(pattern, escape, body)


class _Parser:
    """Builds the node tree from text items and action token lists."""

    def __init__(self, items: list[str | list[_Token]]) -> None:
        self.items = items
        self.index = 0

    def block(self) -> tuple[list[Any], str, list[_Token]]:
        """Nodes up to the next ``end`` or ``else`` (or the end of the template)."""
        nodes: list[Any] = []
        while self.index < len(self.items):
            item = self.items[self.index]
            self.index += 1
            if isinstance(item, str):
                if item:
                    nodes.append(item)
                continue
            if not item:
                raise GoTemplateError("missing value for command: empty action {{ }}")
            head = item[0].value if item[0].kind == "ident" else None
            if head in ("end", "else"):
                return nodes, head, item[1:]
            if head in _UNSUPPORTED:
                raise GoTemplateError(f"{{{{{head}}}}} is outside the supported subset")
            if head == "if":
                nodes.append(self.branch(item[1:]))
            elif head == "range":
                nodes.append(self.range_(item[1:]))
            else:
                nodes.append(_Output(_Expression(item).pipe(top=True)))
        return nodes, "eof", []

    def branch(self, tokens: list[_Token]) -> _If:
        branches = []
        while True:
            pipe = _Expression(tokens).pipe(top=True)
            body, end, rest = self.block()
            branches.append((pipe, body))
            if end == "else" and rest and rest[0].value == "if" and rest[0].kind == "ident":
                tokens = rest[1:]
                continue
            otherwise = self.closing(end, rest, "if")
            return _If(tuple(branches), otherwise)

    def range_(self, tokens: list[_Token]) -> _Range:
        pipe = _Expression(tokens).pipe(top=True, max_names=2)
        if pipe.assign:
            raise GoTemplateError("range can only declare variables with :=")
        body, end, rest = self.block()
        return _Range(pipe, body, self.closing(end, rest, "range"))

    def closing(self, end: str, rest: list[_Token], what: str) -> list[Any]:
        """The ``else`` list (if any) once ``end`` is reached."""
        if end == "eof":
            raise GoTemplateError(f"unexpected EOF: {{{{{what}}}}} has no {{{{end}}}}")
        if rest:
            raise GoTemplateError(f"unexpected {rest[0].value!r} after {{{{{end}}}}}")
        if end == "end":
            return []
        otherwise, end, rest = self.block()
        if end != "end" or rest:
            raise GoTemplateError(f"expected {{{{end}}}} after {{{{else}}}} of {{{{{what}}}}}")
        return otherwise


class _Expression:
    """Parses one action's tokens into a pipeline."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0

    def peek(self, value: str) -> bool:
        return self.index < len(self.tokens) and self.tokens[self.index].value == value

    def pipe(self, *, top: bool = False, max_names: int = 1) -> _Pipe:
        names, assign = self.declaration(max_names) if top else ((), False)
        commands = [self.command()]
        while self.peek("|"):
            self.index += 1
            commands.append(self.command())
        if top and self.index < len(self.tokens):
            raise GoTemplateError(f"unexpected {self.tokens[self.index].value!r} in pipeline")
        return _Pipe(names, assign, tuple(commands))

    def declaration(self, max_names: int) -> tuple[tuple[str, ...], bool]:
        kinds = [t.kind if t.kind != "punct" else t.value for t in self.tokens[:4]]
        for count, pattern in ((2, ["var", ",", "var", "declare"]), (1, ["var", "declare"])):
            if kinds[: len(pattern)] == pattern and count <= max_names:
                self.index = len(pattern)
                return tuple(t.value for t in self.tokens[: len(pattern) : 2]), False
        if kinds[:2] == ["var", "="]:
            self.index = 2
            return (self.tokens[0].value,), True
        return (), False

    def command(self) -> tuple[Any, ...]:
        args = []
        while self.index < len(self.tokens) and not (self.peek("|") or self.peek(")")):
            args.append(self.operand())
        if not args:
            raise GoTemplateError("missing value for command")
        return tuple(args)

    def operand(self) -> Any:
        token = self.tokens[self.index]
        self.index += 1
        if token.kind == "const":
            return _Const(token.value)
        if token.kind == "field":
            return _Field(".", tuple(token.value.split(".")[1:]) if token.value != "." else ())
        if token.kind == "var":
            return _Field(token.value, self.chain(token))
        if token.kind == "ident":
            return _Func(token.value)
        if token.value == "(":
            inner = self.pipe()
            if not self.peek(")"):
                raise GoTemplateError("unclosed left parenthesis")
            self.index += 1
            return _Field(inner, self.chain(self.tokens[self.index - 1]))
        raise GoTemplateError(f"unexpected {token.value!r} in operand")

    def chain(self, before: _Token) -> tuple[str, ...]:
        """Fields written right after a variable or ``)``, as in ``$m.Role``, ``(x).Role``."""
        if self.index < len(self.tokens):
            token = self.tokens[self.index]
            if token.kind == "field" and token.start == before.end and token.value != ".":
                self.index += 1
                return tuple(token.value.split(".")[1:])
        return ()


class _Executor:
    """Walks the node tree, as Go's ``text/template`` exec state does."""

    def __init__(self, data: Any) -> None:
        self.vars: list[tuple[str, Any]] = [("$", data)]
        self.out: list[str] = []
        self.data = data

    def run(self, nodes: list[Any]) -> str:
        self.walk(self.data, nodes)
        return "".join(self.out)

    def walk(self, dot: Any, nodes: list[Any]) -> None:
        for node in nodes:
            if isinstance(node, str):
                self.out.append(node)
            elif isinstance(node, _Output):
                value = self.pipe(dot, node.pipe)
                if not node.pipe.names:
                    self.out.append(format_value(value))
            elif isinstance(node, _If):
                self.branch(dot, node)
            else:
                self.range_(dot, node)

    def branch(self, dot: Any, node: _If) -> None:
        mark = len(self.vars)
        for pipe, body in node.branches:
            if truth(self.pipe(dot, pipe)):
                self.walk(dot, body)
                break
        else:
            self.walk(dot, node.otherwise)
        del self.vars[mark:]

    def range_(self, dot: Any, node: _Range) -> None:
        value = self.pipe(dot, _Pipe((), False, node.pipe.commands))
        if isinstance(value, dict):
            pairs = [(key, value[key]) for key in sorted(value)]
        elif isinstance(value, list | tuple):
            pairs = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            pairs = [(i, i) for i in range(value)]
        elif value is None:
            pairs = []
        else:
            raise GoTemplateError(f"range can't iterate over {format_value(value)}")
        if not pairs:
            self.walk(dot, node.otherwise)
        for key, element in pairs:
            mark = len(self.vars)
            names = node.pipe.names
            bound = [element] if len(names) == 1 else [key, element][: len(names)]
            self.vars.extend(zip(names, bound, strict=True))
            self.walk(element, node.body)
            del self.vars[mark:]

    def pipe(self, dot: Any, pipe: _Pipe) -> Any:
        value, piped = None, False
        for command in pipe.commands:
            value = self.command(dot, command, (value,) if piped else ())
            piped = True
        for name in pipe.names:
            if not pipe.assign:
                self.vars.append((name, value))
                continue
            slot = next((i for i in reversed(range(len(self.vars))) if self.vars[i][0] == name), -1)
            if slot < 0:
                raise GoTemplateError(f"undefined variable: {name}")
            self.vars[slot] = (name, value)
        return value

    def command(self, dot: Any, args: tuple[Any, ...], final: tuple[Any, ...]) -> Any:
        head = args[0]
        if isinstance(head, _Func):
            thunks = [lambda arg=arg: self.operand(dot, arg) for arg in args[1:]]
            thunks += [lambda value=value: value for value in final]
            return call(head.name, thunks)
        if len(args) > 1 or final:
            raise GoTemplateError("can't give argument to non-function")
        return self.operand(dot, head)

    def operand(self, dot: Any, node: Any) -> Any:
        if isinstance(node, _Const):
            return node.value
        if isinstance(node, _Func):
            return call(node.name, [])
        receiver = node.receiver
        if receiver == ".":
            value = dot
        elif isinstance(receiver, _Pipe):
            value = self.pipe(dot, receiver)
        else:
            value = self.variable(receiver)
        for name in node.chain:
            value = field(value, name)
        return value

    def variable(self, name: str) -> Any:
        for bound, value in reversed(self.vars):
            if bound == name:
                return value
        raise GoTemplateError(f"undefined variable: {name}")
