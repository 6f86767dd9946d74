"""The five tabs of the web UI: each lays out its components and wires their events.

What a tab shows comes from the ``*_view`` modules, the playground's models and the
launcher; nothing here computes anything a test could not check without a browser.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from tuneforge.errors import ConfigError, DataError
from tuneforge.runs.catalog import find_runs, resolve_run
from tuneforge.ui import data_view, feedback_view, runs_view
from tuneforge.ui.launcher import Launcher
from tuneforge.ui.playground import LocalModels, RemoteModels, Sampling, side_by_side

USER_ERRORS = (ConfigError, DataError, FileNotFoundError, ValueError)


# -- Runs ---------------------------------------------------------------------------------


def runs_tab(app: gr.Blocks, root: Path, refresh: gr.Button) -> list[gr.Dropdown]:
    """The runs table with filters, one run's page, and the comparison; returns run pickers.

    The table is read again on each page load and on ``refresh``, so runs that finished
    since the UI started show up.
    """
    with gr.Row():
        name = gr.Textbox(label="name contains", elem_id="filter-name", scale=2)
        method = gr.Textbox(label="method contains", elem_id="filter-method", scale=2)
        gates = gr.Dropdown(list(runs_view.GATE_FILTERS), value="any", label="gates", scale=1)
    table = gr.Dataframe(
        runs_view.runs_table(root), elem_id="runs-table", interactive=False, wrap=True
    )
    triggers = [box.change for box in (name, method, gates)] + [refresh.click, app.load]
    gr.on(triggers, lambda *f: runs_view.runs_table(root, *f), [name, method, gates], table)
    labels = run_labels(root)
    run = gr.Dropdown(labels, value=labels[0] if labels else None, label="run", elem_id="run-pick")
    overview = gr.Markdown(elem_id="run-overview")
    curves = gr.Plot(label="loss and learning rate", elem_id="run-curves")
    with gr.Row():
        evals = gr.Dataframe(
            _empty(runs_view.EVAL_COLUMNS), label="eval: tuned vs base", elem_id="run-eval"
        )
        gate_table = gr.Dataframe(
            _empty(runs_view.GATE_COLUMNS), label="gates", elem_id="run-gates"
        )
    with gr.Accordion("data report", open=False):
        report = gr.Markdown(elem_id="run-data-report")
        lengths = gr.Image(label="token lengths", type="pil", interactive=False)
    with gr.Accordion("lineage", open=False):
        lineage = gr.JSON(elem_id="run-lineage", open=True)
    page = [overview, curves, evals, gate_table, report, lengths, lineage]
    for trigger in (run.change, app.load):
        trigger(lambda label: _run_page(root, label), run, page)
    gr.Markdown("### Compare runs")
    picked = gr.Dropdown(labels, multiselect=True, label="runs to compare", elem_id="compare-pick")
    compare = gr.Button("Compare", elem_id="compare-go")
    compare_plot = gr.Plot(label="overlaid curves", elem_id="compare-curves")
    diff = gr.Dataframe(_empty(["key"]), label="config keys that differ", elem_id="compare-diff")
    numbers = gr.Dataframe(_empty(["metric"]), label="numbers (* best)", elem_id="compare-metrics")
    compare.click(lambda chosen: _compare(root, chosen), picked, [compare_plot, diff, numbers])
    return [run, picked]


def _run_page(root: Path, label: str | None) -> list[Any]:
    if not label:
        return [""] + [None] * 6
    run = _resolve(root, label)
    text, plot = runs_view.data_report(run)
    return [
        runs_view.run_overview(run),
        runs_view.curves_figure({run.label: runs_view.train_curves(run)}),
        runs_view.eval_table(run),
        runs_view.gates_table(run),
        text,
        _image(plot),
        runs_view.lineage(run),
    ]


def _compare(root: Path, labels: list[str] | None) -> tuple[Any, Any, Any]:
    if not labels or len(labels) < 2:
        raise gr.Error("pick two or more runs to compare")
    try:
        return runs_view.compare_runs(root, labels)
    except USER_ERRORS as err:
        raise gr.Error(str(err)) from None


# -- Data ---------------------------------------------------------------------------------


def data_tab(app: gr.Blocks, root: Path) -> gr.Dropdown:
    """A prepared dataset page by page, its quarantine, dropped records and report."""
    labels = [label for label in run_labels(root) if _has_data(root, label)]
    with gr.Row():
        first = labels[0] if labels else None
        run = gr.Dropdown(labels, value=first, label="run", elem_id="data-run", scale=3)
        split = gr.Dropdown([], label="split", elem_id="data-split", scale=1)
        size = gr.Number(5, label="samples per page", precision=0, minimum=1, maximum=50, scale=1)
    with gr.Row():
        previous = gr.Button("< previous", elem_id="data-prev", size="sm")
        page = gr.Number(1, label="page", precision=0, minimum=1, elem_id="data-page")
        pages = gr.Markdown(elem_id="data-pages")
        following = gr.Button("next >", elem_id="data-next", size="sm")
    samples = gr.HTML(elem_id="data-samples")
    with gr.Accordion("quarantined records", open=False):
        quarantine_count = gr.Markdown(elem_id="data-quarantine-count")
        quarantine = gr.Dataframe(
            _empty(data_view.QUARANTINE_COLUMNS), elem_id="data-quarantine", wrap=True
        )
    with gr.Accordion("dropped records", open=False):
        dropped_count = gr.Markdown(elem_id="data-dropped-count")
        dropped = gr.Dataframe(_empty(data_view.DROPPED_COLUMNS), elem_id="data-dropped", wrap=True)
    with gr.Accordion("data report", open=False):
        report = gr.Markdown()
    for trigger in (run.change, app.load):
        trigger(
            lambda label: _data_run(root, label),
            run,
            [split, page, quarantine_count, quarantine, dropped_count, dropped, report],
        )
    show = [run, split, page, size]
    for trigger in (split.change, page.change, size.change):
        trigger(lambda *a: _data_page(root, *a), show, [samples, pages])
    previous.click(lambda p: max(1, int(p or 1) - 1), page, page)
    following.click(lambda p: int(p or 1) + 1, page, page)
    return run


def _data_run(root: Path, label: str | None) -> list[Any]:
    if not label:
        return [gr.update(choices=[], value=None), 1, "", None, "", None, ""]
    run = _resolve(root, label)
    found = data_view.splits(run)
    held, held_count = data_view.quarantine_table(run)
    dropped, dropped_count = data_view.dropped_table(run)
    return [
        gr.update(choices=found, value=found[0] if found else None),
        1,
        f"{held_count} records quarantined (shown: {len(held)})",
        held,
        f"{dropped_count} records dropped (shown: {len(dropped)})",
        dropped,
        runs_view.data_report(run)[0],
    ]


def _data_page(root: Path, label: str | None, split: str | None, page: Any, size: Any) -> Any:
    if not label or not split:
        return "", ""
    run = _resolve(root, label)
    size = max(1, int(size or 5))
    total = data_view.page_count(run, split, size)
    page = min(max(1, int(page or 1)), total)
    try:
        return data_view.data_page(run, split, page, size), f"page {page} of {total}"
    except USER_ERRORS as err:
        raise gr.Error(str(err)) from None


# -- Playground ---------------------------------------------------------------------------


def playground_tab(models: LocalModels | RemoteModels) -> list[gr.Dropdown]:
    """Two models answer the same prompt side by side, streaming; returns the model pickers."""
    choices = model_choices(models)
    left_default = next((c for c in choices if c.endswith("base")), choices[0] if choices else None)
    right_default = next((c for c in choices if c.endswith("tuned")), left_default)
    with gr.Row():
        left = gr.Dropdown(choices, value=left_default, label="left model", elem_id="left-model")
        right = gr.Dropdown(
            choices, value=right_default, label="right model", elem_id="right-model"
        )
    with gr.Accordion("sampling", open=False):
        with gr.Row():
            temperature = gr.Slider(0, 2, value=0, step=0.05, label="temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="top_p")
            max_tokens = gr.Slider(1, 1024, value=128, step=1, label="max tokens")
            seed = gr.Number(0, label="seed", precision=0)
        system = gr.Textbox(label="system prompt", lines=2, elem_id="system-prompt")
    with gr.Row():
        left_chat = gr.Chatbot(label="left", elem_id="left-chat", height=360)
        right_chat = gr.Chatbot(label="right", elem_id="right-chat", height=360)
    prompt = gr.Textbox(label="prompt", lines=2, elem_id="prompt", placeholder="Ask both models")
    with gr.Row():
        send = gr.Button("Send to both", variant="primary", elem_id="send")
        clear = gr.Button("Clear", elem_id="clear")

    async def answer(text, left_model, right_model, left_log, right_log, sys, t, p, m, s):
        if not text or not text.strip():
            raise gr.Error("type a prompt first")
        if not left_model or not right_model:
            raise gr.Error("pick a model on each side")
        sampling = Sampling(float(t), float(p), int(m), None if s is None else int(s))
        logs = [list(left_log or []), list(right_log or [])]
        asked = [_conversation(log, sys, text) for log in logs]
        for log in logs:
            log += [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        pair = (left_model, right_model)
        async for left_text, right_text in side_by_side(models, pair, tuple(asked), sampling):
            logs[0][-1]["content"], logs[1][-1]["content"] = left_text, right_text
            yield logs[0], logs[1], ""

    inputs = [prompt, left, right, left_chat, right_chat, system, temperature, top_p, max_tokens]
    for trigger in (send.click, prompt.submit):
        trigger(answer, [*inputs, seed], [left_chat, right_chat, prompt])
    clear.click(lambda: ([], []), outputs=[left_chat, right_chat])
    return [left, right]


def _conversation(log: list[dict[str, Any]], system: str | None, text: str) -> list[dict]:
    """The messages a model is asked: the system prompt, its own history, the new prompt."""
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    for turn in log:
        messages.append({"role": turn["role"], "content": _text(turn["content"])})
    return [*messages, {"role": "user", "content": text}]


def _text(content: Any) -> str:
    """A chatbot turn's text (Gradio may hand back a list of content parts)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def model_choices(models: LocalModels | RemoteModels) -> list[str]:
    try:
        return models.choices()
    except ConfigError:
        return []


# -- Launch -------------------------------------------------------------------------------


def launch_tab(root: Path, configs: list[Path]) -> None:
    """Edit a config, validate it, launch it, watch it and stop it."""
    launcher = Launcher(root)
    files = [str(path) for path in configs]
    with gr.Row():
        picked = gr.Dropdown(
            files, value=files[0] if files else None, label="config file", elem_id="launch-file"
        )
        path_box = gr.Textbox(label="or a path", elem_id="launch-path")
    editor = gr.Code(
        language="yaml", label="config (edit before launching)", elem_id="launch-yaml", max_lines=24
    )
    with gr.Row():
        check = gr.Button("Validate", elem_id="launch-validate")
        start = gr.Button("Launch", variant="primary", elem_id="launch-start")
        stop = gr.Button("Stop (checkpoint)", variant="stop", elem_id="launch-stop")
    verdict = gr.Markdown(elem_id="launch-verdict")
    status = gr.Markdown("no run launched", elem_id="launch-status")
    progress = gr.Slider(0, 100, value=0, label="progress %", interactive=False)
    log = gr.Textbox(label="log", lines=14, max_lines=14, elem_id="launch-log", autoscroll=True)

    def origin(choice: str | None, typed: str | None) -> Path:
        chosen = (typed or "").strip() or choice
        if not chosen:
            raise gr.Error("pick a config file or type its path")
        return Path(chosen).expanduser()

    def load(choice: str | None, typed: str | None) -> str:
        path = origin(choice, typed)
        if not path.is_file():
            raise gr.Error(f"{path}: config file not found")
        return path.read_text(encoding="utf-8")

    def validate(text: str, choice: str | None, typed: str | None) -> str:
        from tuneforge.ui.launcher import validate as check_config

        try:
            config = check_config(text or "", origin(choice, typed), root)
        except ConfigError as err:
            return f"**invalid**: {html.escape(str(err))}"
        return f"**valid**: `{config.name}`, {config.method.kind} {config.objective}"

    def begin(text: str, choice: str | None, typed: str | None) -> str:
        try:
            launch = launcher.start(text or "", origin(choice, typed))
        except ConfigError as err:
            return f"**not launched**: {html.escape(str(err))}"
        return f"**launched** `{launch.name}` (log: `{launch.log_file}`)"

    def watch() -> tuple[str, float, str]:
        found = launcher.status()
        return found["summary"], round(100 * found["progress"], 1), found["log"]

    for trigger in (picked.change, path_box.submit):
        trigger(load, [picked, path_box], editor)
    check.click(validate, [editor, picked, path_box], verdict)
    start.click(begin, [editor, picked, path_box], verdict)
    stop.click(lambda: f"**{launcher.stop()}**", outputs=verdict)
    gr.Timer(1.0).tick(watch, outputs=[status, progress, log])
    if files:
        editor.value = Path(files[0]).read_text(encoding="utf-8")


# -- Feedback -----------------------------------------------------------------------------


def feedback_tab(app: gr.Blocks, default: Path | None) -> None:
    """Rank each prompt's replies; the ranks are saved into the labelling file as you go."""
    records = gr.State([])
    with gr.Row():
        path = gr.Textbox(
            str(default) if default else "", label="labelling file", elem_id="fb-file", scale=4
        )
        load = gr.Button("Load", elem_id="fb-load", scale=1)
    with gr.Row():
        previous = gr.Button("< previous", size="sm", elem_id="fb-prev")
        index = gr.Number(1, label="record", precision=0, minimum=1, elem_id="fb-index")
        following = gr.Button("next >", size="sm", elem_id="fb-next")
    prompt = gr.Markdown(elem_id="fb-prompt")
    rows, replies, ranks = [], [], []
    for slot in range(feedback_view.MAX_REPLIES):
        with gr.Row(visible=False) as row:
            rows.append(row)
            replies.append(
                gr.Textbox(label=f"reply {slot + 1}", interactive=False, scale=6, lines=2)
            )
            ranks.append(
                gr.Number(
                    label="rank (1 = best)", precision=0, minimum=1, elem_id=f"fb-rank-{slot}"
                )
            )
    save = gr.Button("Save ranks", variant="primary", elem_id="fb-save")
    with gr.Row():
        pairs_out = gr.Textbox(label="preference pairs file", elem_id="fb-pairs-out", scale=4)
        make = gr.Button("Make pairs", elem_id="fb-make-pairs", scale=1)
    status = gr.Markdown(elem_id="fb-status")
    shown = [prompt, *rows, *replies, *ranks]

    def open_file(file: str) -> list[Any]:
        try:
            found = feedback_view.load_records(Path(file).expanduser())
        except (DataError, OSError) as err:
            raise gr.Error(str(err)) from None
        default_out = str(Path(file).with_suffix("")) + ".pairs.jsonl"
        return [found, 1, default_out, *_record_view(found, 1)]

    def store(file: str, found: list, at: Any, *given: Any) -> str:
        if not found:
            raise gr.Error("load a labelling file first")
        try:
            return feedback_view.set_ranks(Path(file), found, _index(found, at), list(given))
        except DataError as err:
            raise gr.Error(str(err)) from None

    def pairs(file: str, out: str) -> str:
        try:
            return feedback_view.make_pairs(Path(file), Path(out))
        except (DataError, OSError) as err:
            raise gr.Error(str(err)) from None

    load.click(open_file, path, [records, index, pairs_out, *shown])
    if default is not None and default.is_file():
        app.load(open_file, path, [records, index, pairs_out, *shown])
    index.change(lambda found, at: _record_view(found, at), [records, index], shown)
    previous.click(lambda at: max(1, int(at or 1) - 1), index, index)
    following.click(
        lambda found, at: min(len(found) or 1, int(at or 1) + 1), [records, index], index
    )
    save.click(store, [path, records, index, *ranks], status)
    make.click(pairs, [path, pairs_out], status)


def _index(records: list, at: Any) -> int:
    return min(max(1, int(at or 1)), len(records)) - 1


def _record_view(records: list[dict[str, Any]], at: Any) -> list[Any]:
    slots = feedback_view.MAX_REPLIES
    if not records:
        return ["", *[gr.update(visible=False)] * slots, *[""] * slots, *[None] * slots]
    record = records[_index(records, at)]
    texts, ranks = feedback_view.reply_texts(record), feedback_view.current_ranks(record)
    count = len(texts)
    head = f"**record {_index(records, at) + 1} of {len(records)}** (`{record.get('id', '')}`)"
    return [
        f"{head}\n\n{feedback_view.prompt_markdown(record)}",
        *[gr.update(visible=i < count) for i in range(slots)],
        *[texts[i] if i < count else "" for i in range(slots)],
        *[ranks[i] if i < count else None for i in range(slots)],
    ]


# -- shared -------------------------------------------------------------------------------


def run_labels(root: Path) -> list[str]:
    return [run.label for run in find_runs(root)] if root.is_dir() else []


def _has_data(root: Path, label: str) -> bool:
    return (root / label / "data" / "tokens").is_dir()


def _resolve(root: Path, label: str) -> Any:
    try:
        return resolve_run(label, root)
    except ConfigError as err:
        raise gr.Error(str(err)) from None


def _empty(columns: Any) -> Any:
    import pandas as pd

    return pd.DataFrame(columns=list(columns))


def _image(path: Path | None) -> Any:
    if path is None:
        return None
    from PIL import Image

    with Image.open(path) as image:
        return image.copy()
