"""``tuneforge ui``: the Gradio app with five tabs (Runs, Data, Playground, Launch, Feedback).

The tabs (:mod:`tuneforge.ui.tabs`) only lay out and wire components; what they show
comes from the ``*_view`` modules, the playground's models and the launcher, which the
tests exercise without a browser. The app binds to 127.0.0.1 unless told otherwise,
asks for a password when one is set, never opens a share link and never runs
code that came with a model.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from tuneforge.ui import data_view
from tuneforge.ui.playground import LocalModels, RemoteModels
from tuneforge.ui.tabs import (
    data_tab,
    feedback_tab,
    launch_tab,
    model_choices,
    playground_tab,
    run_labels,
    runs_tab,
)


@dataclass
class UiSettings:
    """What ``tuneforge ui`` was given.

    Attributes:
        runs_dir: The runs directory (the configs' ``runs_dir``).
        configs: Config files offered on the Launch tab.
        serve_url: A running OpenAI-compatible server for the playground (else in-process).
        api_key: The key for ``serve_url``.
        models: Extra model folders for the in-process playground.
        feedback: A labelling file to open on the Feedback tab.
    """

    runs_dir: Path
    configs: list[Path] = field(default_factory=list)
    serve_url: str | None = None
    api_key: str | None = None
    models: list[Path] = field(default_factory=list)
    feedback: Path | None = None


def build_app(settings: UiSettings) -> gr.Blocks:
    """The whole UI, ready to ``launch``."""
    root = settings.runs_dir.resolve()
    models: LocalModels | RemoteModels
    if settings.serve_url:
        models = RemoteModels(settings.serve_url, settings.api_key)
    else:
        models = LocalModels(root, settings.models)
    with gr.Blocks(title="tuneforge") as app:
        with gr.Row():
            gr.Markdown(f"# tuneforge\nRuns in `{root}`")
            refresh = gr.Button(
                "Refresh runs and models", elem_id="refresh-all", size="sm", scale=0, min_width=200
            )
        with gr.Tabs():
            with gr.Tab("Runs", id="runs"):
                run_pickers = runs_tab(app, root, refresh)
            with gr.Tab("Data", id="data"):
                run_pickers.append(data_tab(app, root))
            with gr.Tab("Playground", id="playground"):
                model_pickers = playground_tab(models)
            with gr.Tab("Launch", id="launch"):
                launch_tab(root, settings.configs)
            with gr.Tab("Feedback", id="feedback"):
                feedback_tab(app, settings.feedback)
        gr.on(
            [refresh.click, app.load],
            lambda: (
                [gr.update(choices=run_labels(root)) for _ in run_pickers]
                + [gr.update(choices=model_choices(models)) for _ in model_pickers]
            ),
            outputs=[*run_pickers, *model_pickers],
        )
    app.tuneforge_models = models  # closed by launch_ui on the way out
    return app


def close_ui(app: gr.Blocks) -> None:
    """Stop the server and free the playground's models (their engines' threads end)."""
    import asyncio

    app.close()
    asyncio.run(app.tuneforge_models.close())


def launch_ui(
    settings: UiSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    password: str | None = None,
    block: bool = True,
) -> gr.Blocks:
    """Build the app and serve it; with ``block`` False it returns once the server is up.

    A password asks every visitor to log in (any user name, that password).
    """
    app = build_app(settings)
    auth = None
    if password:

        def auth(_user: str, given: str) -> bool:
            return secrets.compare_digest(given.encode(), password.encode())

    app.queue(default_concurrency_limit=4)
    app.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        share=False,
        prevent_thread_lock=not block,
        quiet=True,
        show_error=True,
        css=data_view.DATA_CSS,
        footer_links=[],
    )
    return app
