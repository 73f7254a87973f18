"""A real browser for the tests: Playwright driving Debian's Chromium, pages opened with
every network request blocked, console errors collected, screenshots kept for people."""

import os
import re
import shutil
from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
BROWSER_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright):
    """Debian's Chromium driven by Playwright, or a skip (a failure under CI=true)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("CI: Chromium is missing (.ci/run installs Debian's chromium package)")
        pytest.skip("Chromium is not installed here (apt install chromium); CI installs it")
    return playwright.chromium.launch(executable_path=executable, args=BROWSER_FLAGS)


class Page:
    """A page opened offline: every request but the page itself is aborted and recorded,
    and console errors and page errors are collected."""

    def __init__(self, browser, path: Path):
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.requests, self.errors = [], []

        def route(route):
            if route.request.url.startswith("file://"):
                route.continue_()
            else:
                self.requests.append(route.request.url)
                route.abort()

        self.context.route("**/*", route)
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(path.resolve().as_uri())

    def alphas(self, root: str = "") -> list[float]:
        styles = self.page.eval_on_selector_all(
            f"{root} .xae-source .xae-src",
            "cells => cells.map(c => getComputedStyle(c).backgroundColor)",
        )
        return [float(re.findall(r"[\d.]+", s)[3]) if s.startswith("rgba") else 1.0 for s in styles]

    def close(self):
        self.context.close()


def save_screenshot(page: "Page", name: str) -> Path:
    """A full-page screenshot in screenshots/ (left for a person to look at)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.page.screenshot(path=str(path), full_page=True)
    return path
