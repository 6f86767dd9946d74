"""Take the screenshots in docs/ui.md: the web UI over a runs directory, in headless Chromium.

    python scripts/ui_screenshots.py --runs-dir runs --out docs/images

Needs a finished run (``make demo``) and Chromium (``scripts/install-chromium.sh``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from tuneforge.ui.app import UiSettings, close_ui, launch_ui

PROMPT = "Hi, I was charged twice for my subscription this month. Please refund one."
SYSTEM = 'Route the support ticket. Reply with JSON only: {"team": ..., "priority": ...}.'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--config", type=Path, default=Path("examples/quickstart.yaml"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = launch_ui(UiSettings(args.runs_dir, [args.config]), port=port, block=False)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"))
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/")
            take(page, args.out)
            browser.close()
    finally:
        close_ui(app)


def take(page: Page, out: Path) -> None:
    page.locator("#run-curves img").wait_for()
    page.screenshot(path=str(out / "ui-runs.png"), full_page=True)
    page.get_by_role("tab", name="Data").click()
    page.locator("#data-samples .tf-trained").first.wait_for()
    page.screenshot(path=str(out / "ui-data.png"))
    page.get_by_role("tab", name="Playground").click()
    page.get_by_text("sampling", exact=True).click()
    page.locator("#system-prompt textarea").fill(SYSTEM)
    page.locator("#prompt textarea").fill(PROMPT)
    page.locator("#send").click()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=bot]').length == 2 && "
        "!document.querySelector('#send').disabled && "
        "[...document.querySelectorAll('[data-testid=bot]')].every(e => e.innerText.trim())"
    )
    page.wait_for_timeout(3000)  # let both streams end
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(out / "ui-playground.png"))
    page.get_by_role("tab", name="Launch").click()
    page.locator("#launch-validate").click()
    page.get_by_text("valid:").first.wait_for()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(out / "ui-launch.png"))


if __name__ == "__main__":
    main()
