"""The web page at ``/`` in a real browser (ray tier): Debian's headless Chromium driven by Playwright's
Python API loads the page a served app returns, sends a request and watches the rounds arrive."""

from __future__ import annotations

import shutil
import socket

import pytest

pytestmark = pytest.mark.ray

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-test-token-0123"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (`make install` installs it with apt-get when it can)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_page_sends_a_request_and_shows_the_rounds_live(ray_cluster):
    from playwright.sync_api import expect, sync_playwright
    from ray import serve

    from actors.commands.serve import preset
    from actors.placement import PlacementConfig, Resources
    from actors.runtime import RayRuntime
    from actors.serve import start

    chromium = _chromium()
    light = PlacementConfig(generator=Resources(0.1), scorer=Resources(0.1))
    with RayRuntime(preset("demo"), placement=light) as runtime:
        try:
            url = start(runtime.coordinators, "127.0.0.1", _free_port(), info=preset("demo").to_dict(),
                        name="page-demo", route_prefix="/demo", token=TOKEN)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page()
                    page.goto(url)  # the page itself needs no token ...
                    expect(page.locator("#about")).to_contain_text("needs a bearer token")  # ... its data does
                    page.fill("#token", TOKEN)
                    page.reload()
                    page.fill("#token", TOKEN)
                    expect(page.locator("#about")).to_contain_text("scorers a, b")
                    expect(page.locator("#endpoint")).to_contain_text("consensus")
                    page.click("#send")
                    expect(page.locator("#rounds tr.round")).to_have_count(6, timeout=60_000)
                    expect(page.locator("#rounds thead")).to_contain_text("a")
                    expect(page.locator("#result-json")).to_contain_text("generator_done", timeout=60_000)
                    expect(page.locator("#status")).to_contain_text("done in")
                    # An input fault shows its one-line reason.
                    page.fill("#body", '{"context": {"target": "abc"}, "stream": true}')
                    page.click("#send")
                    expect(page.locator("#error")).to_contain_text("400: context['target'] must be a list")
                finally:
                    browser.close()
        finally:
            serve.shutdown()
