"""The web UI in a real headless Chromium (Debian's ``chromium``), driven by Playwright.

One UI server (password set) over one finished run of the tiny model serves every test,
in file order: the runs page, the data browser, the playground, launching (a run
that is stopped with a checkpoint, then one that finishes), comparing the two runs,
and ranking replies. Screenshots go to ``test-artifacts/ui/`` (or
``$TUNEFORGE_TEST_ARTIFACTS/ui``). ``scripts/install-chromium.sh`` installs the browser.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from tuneforge.cli.main import main  # noqa: E402
from tuneforge.console import err, out  # noqa: E402
from tuneforge.runs.catalog import find_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data" / "support_tickets.jsonl"
ARTIFACTS = Path(os.environ.get("TUNEFORGE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "ui"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium")
PASSWORD = "correct horse"
PROMPT = "My invoice shows the wrong amount, please fix it."
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM, reason="no chromium; run scripts/install-chromium.sh"),
]


def config_text(name: str, model: Path, runs: Path, steps: int, *, full_eval: bool) -> str:
    """A tiny run: 48 tickets, a few LoRA steps, a small eval, an adapter export."""
    evaluation = (
        "eval:\n  max_samples: 8\n  max_new_tokens: 8\n  bootstrap_samples: 100\n"
        f"  compare_base: {str(full_eval).lower()}\n"
        "  bias: {enabled: false}\n  safety: {enabled: false}\n  retention: {enabled: false}\n"
        "  gates: ['exact_match >= 0']\n"
    )
    return (
        f"name: {name}\nseed: 7\nruns_dir: {runs}\n"
        f"model:\n  name_or_path: {model}\n"
        f"data:\n  path: {DATA}\n  max_samples: 48\n"
        f"train:\n  max_steps: {steps}\n  batch_size: 4\n  lr: 2.0e-3\n  eval_every: 5\n"
        f"{evaluation}export:\n  formats: [adapter]\n"
    )


def cli(*args: str) -> tuple[int, str]:
    """`tuneforge ARGS` in this process; the exit code and stderr."""
    with pytest.MonkeyPatch.context() as patch:
        stderr = io.StringIO()
        patch.setattr(sys, "stdout", io.StringIO())
        patch.setattr(sys, "stderr", stderr)
        patch.setenv("TUNEFORGE_TRACK_BACKENDS", "")
        for console in (out, err):
            patch.setattr(console, "width", 200)
        return main(list(args)), stderr.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    """A finished run, configs to launch, a labelling file, and the UI serving them."""
    from tuneforge.ui.app import UiSettings, close_ui, launch_ui

    folder = tmp_path_factory.mktemp("ui")
    runs = folder / "runs"
    first = folder / "uitest.yaml"
    first.write_text(config_text("uitest", tiny_model_dir, runs, 10, full_eval=True))
    code, stderr = cli("run", str(first))
    assert code == 0, stderr
    configs = folder / "configs"
    configs.mkdir()
    (configs / "launched.yaml").write_text(
        config_text("launched", tiny_model_dir, runs, 6, full_eval=False)
    )
    (configs / "long.yaml").write_text(
        config_text("long", tiny_model_dir, runs, 5000, full_eval=False)
    )
    labelling = folder / "to-rank.jsonl"
    replies = [{"content": text, "rank": None} for text in ("Sure, refund sent.", "No.", "?")]
    record = {"id": "t1", "prompt": [{"role": "user", "content": PROMPT}], "responses": replies}
    labelling.write_text(json.dumps(record) + "\n")
    settings = UiSettings(
        runs_dir=runs,
        configs=sorted(configs.glob("*.yaml")),
        feedback=labelling,
    )
    port = free_port()
    app = launch_ui(settings, port=port, password=PASSWORD, block=False)
    yield {
        "url": f"http://127.0.0.1:{port}/",
        "runs": runs,
        "run": next(iter(find_runs(runs))),
        "labelling": labelling,
        "model": tiny_model_dir,
    }
    close_ui(app)  # no model of the playground outlives the module


@pytest.fixture(scope="module")
def page(site: dict[str, Any]):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        tab = browser.new_page(viewport={"width": 1360, "height": 1000})
        tab.set_default_timeout(60_000)
        yield tab
        browser.close()


def wait_text(
    page: Any, selector: str, text: str, *, regex: bool = False, timeout: float = 60_000
) -> None:
    """Wait until the element's visible text contains ``text`` (or matches it as a regex)."""
    pattern = text if regex else re.escape(text)
    try:
        page.wait_for_function(
            "([s, p]) => new RegExp(p).test(document.querySelector(s)?.innerText || '')",
            arg=[selector, pattern],
            timeout=timeout,
        )
    except sync_api.TimeoutError:
        shot(page, "timed-out")
        found = page.locator(selector).inner_text() if page.locator(selector).count() else None
        raise AssertionError(f"{selector} never showed {text!r}; it shows {found!r}") from None


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_ui_asks_for_the_password_before_anything_else(site, page) -> None:
    import httpx

    for route in ("config", "gradio_api/info"):
        assert httpx.get(site["url"] + route, timeout=10).status_code == 401, route
    joined = httpx.post(site["url"] + "gradio_api/queue/join", json={}, timeout=10)
    assert joined.status_code == 401
    page.goto(site["url"])
    page.get_by_label("username").fill("anyone")
    page.get_by_label("password").fill("wrong")
    page.get_by_role("button", name="Login").click()
    page.get_by_text("Incorrect Credentials").first.wait_for()
    page.goto(site["url"])
    page.get_by_label("username").fill("anyone")
    page.get_by_label("password").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Runs").wait_for()


def test_the_runs_page_shows_curves_eval_against_base_and_gates(site, page) -> None:
    run = site["run"]
    wait_text(page, "#runs-table", run.label)
    page.locator("#run-curves img").wait_for()
    overview = page.locator("#run-overview")
    steps = run.summary("train")["steps"]
    assert f"{steps} steps" in overview.inner_text()
    evals = page.locator("#run-eval")
    wait_text(page, "#run-eval", "exact_match")
    assert "chrf" in evals.inner_text()
    assert "exact_match >= 0" in page.locator("#run-gates").inner_text()
    page.get_by_text("lineage", exact=True).click()
    wait_text(page, "#run-lineage", "base model")
    shot(page, "runs")
    page.locator("#filter-name input, #filter-name textarea").first.fill("no-such-run")
    page.wait_for_function(
        "() => !document.querySelector('#runs-table').innerText.includes('uitest')"
    )
    page.locator("#filter-name input, #filter-name textarea").first.fill("")
    wait_text(page, "#runs-table", run.label)


def test_the_data_browser_pages_through_rendered_samples(site, page) -> None:
    import pyarrow.parquet as pq

    run = site["run"]
    rows = pq.read_table(run.path / "data" / "tokens" / "train.parquet").num_rows
    page.get_by_role("tab", name="Data").click()
    samples = page.locator("#data-samples")
    samples.locator(".tf-trained").first.wait_for()
    assert f"samples 1-5 of {rows}" in samples.inner_text()
    first_id = samples.locator(".tf-sample-head").first.inner_text()
    assert samples.locator(".tf-sample").count() == 5
    page.locator("#data-next").click()
    page.wait_for_function(
        "(n) => document.querySelector('#data-samples').innerText.includes(n)",
        arg=f"samples 6-10 of {rows}",
    )
    assert samples.locator(".tf-sample-head").first.inner_text() != first_id
    books = run.summary("data")
    dropped = sum(books["dropped"].values())
    page.get_by_text("dropped records", exact=True).click()
    wait_text(page, "#data-dropped-count", f"{dropped} records dropped")
    page.get_by_text("quarantined records", exact=True).click()
    quarantined = f"{books['quarantined']} records quarantined"
    wait_text(page, "#data-quarantine-count", quarantined)
    shot(page, "data")


def expected_reply(model_dir: Path, adapter: Path | None) -> str:
    """What the model says to PROMPT, greedy, through the eval generator (not the UI)."""
    from tuneforge.eval.generate import Sampling, generate
    from tuneforge.models.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    model = load_model(str(model_dir))
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    sampling = Sampling(max_new_tokens=24)
    messages = [[{"role": "user", "content": PROMPT}]]
    return generate(model, tokenizer, messages, sampling=sampling, label=None)[0]


def test_the_playground_streams_base_and_tuned_side_by_side(site, page) -> None:
    run = site["run"]
    # before the page loads its engines: two model loads in one process must not overlap
    base = expected_reply(site["model"], None)
    tuned = expected_reply(site["model"], run.path / "train" / "adapter")
    page.get_by_role("tab", name="Playground").click()
    assert page.locator("#left-model input").input_value() == f"{run.label} · base"
    assert page.locator("#right-model input").input_value() == f"{run.label} · tuned"
    page.get_by_text("sampling", exact=True).click()
    slider = page.get_by_label("max tokens").first
    slider.fill("24")
    page.locator("#prompt textarea").fill(PROMPT)
    page.locator("#send").click()
    left = page.locator("#left-chat [data-testid=bot]")
    right = page.locator("#right-chat [data-testid=bot]")
    page.wait_for_function(
        "([a, b]) => [...document.querySelectorAll('#left-chat [data-testid=bot], "
        "#right-chat [data-testid=bot]')].map(e => e.innerText.trim()).join('|') == a + '|' + b",
        arg=[base, tuned],
        timeout=120_000,
    )
    assert left.inner_text().strip() == base and right.inner_text().strip() == tuned
    shot(page, "playground")


def test_launch_validates_stops_with_a_checkpoint_and_finishes(site, page) -> None:
    page.get_by_role("tab", name="Launch").click()
    picker = page.locator("#launch-file input")
    picker.click()
    page.get_by_role("option", name=re.compile("long.yaml")).click()
    editor = page.locator("#launch-yaml .cm-content")
    wait_text(page, "#launch-yaml", "max_steps: 5000")
    _replace_editor_text(page, editor, "max_steps: 5000", "max_steps: lots")
    page.locator("#launch-validate").click()
    wait_text(page, "#launch-verdict", r"invalid.*long\.yaml:\d+.*train\.max_steps", regex=True)
    _replace_editor_text(page, editor, "max_steps: lots", "max_steps: 5000")
    page.locator("#launch-validate").click()
    wait_text(page, "#launch-verdict", "valid: long")
    page.locator("#launch-start").click()
    status = page.locator("#launch-status")
    wait_text(page, "#launch-status", r"training step [1-9]\d*/5000", regex=True, timeout=180_000)
    page.locator("#launch-stop").click()
    wait_text(page, "#launch-status", "stopped: long", timeout=120_000)
    stopped = next(iter(find_runs(site["runs"], "long")))
    assert any((stopped.path / "checkpoints" / "train").iterdir())
    shot(page, "launch-stopped")

    picker.click()
    page.get_by_role("option", name=re.compile("launched.yaml")).click()
    wait_text(page, "#launch-yaml", "name: launched")
    page.locator("#launch-start").click()
    wait_text(page, "#launch-status", "finished: launched", timeout=300_000)
    assert "training step 6/6" in status.inner_text()
    launched = next(iter(find_runs(site["runs"], "launched")))
    steps = [r for r in launched.train_records() if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert "export" in launched.stages
    shot(page, "launch-finished")


def _replace_editor_text(page: Any, editor: Any, old: str, new: str) -> None:
    """Edit the CodeMirror editor as a person would: select the text, type over it."""
    editor.get_by_text(old).click()
    page.keyboard.press("Home")  # after the indentation
    page.keyboard.press("Shift+End")
    page.keyboard.type(new)
    wait_text(page, "#launch-yaml", new)


def test_compare_overlays_the_launched_run_on_the_first(site, page) -> None:
    page.get_by_role("tab", name="Runs").click()
    page.locator("#refresh-all").click()
    launched = next(iter(find_runs(site["runs"], "launched"))).label
    picker = page.locator("#compare-pick input")
    for label in (site["run"].label, launched):
        picker.click()
        page.get_by_role("option", name=label).click()
    page.locator("#compare-go").click()
    page.locator("#compare-curves img").wait_for()
    diff = page.locator("#compare-diff")
    wait_text(page, "#compare-diff", "train.max_steps")
    assert "name" in diff.inner_text() and "launched" in diff.inner_text()
    wait_text(page, "#compare-metrics", "train.steps")
    shot(page, "compare")


def test_ranks_given_in_the_page_are_saved_and_become_pairs(site, page) -> None:
    page.get_by_role("tab", name="Feedback").click()
    page.locator("#fb-load").click()
    wait_text(page, "#fb-prompt", PROMPT)
    for slot, rank in enumerate((1, 3, 2)):
        page.locator(f"#fb-rank-{slot} input").fill(str(rank))
    page.locator("#fb-save").click()
    wait_text(page, "#fb-status", "1 of 1 records fully ranked")
    saved = json.loads(site["labelling"].read_text())
    assert [r["rank"] for r in saved["responses"]] == [1, 3, 2]
    page.locator("#fb-make-pairs").click()
    wait_text(page, "#fb-status", "2 pairs from 1 records")
    pairs_file = site["labelling"].with_name("to-rank.pairs.jsonl")
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    chosen = {p["preferred_output"][-1]["content"] for p in pairs}
    assert chosen == {"Sure, refund sent."} and len(pairs) == 2
    shot(page, "feedback")
