"""The page at GET / in a real headless Chromium, against a real `python -m service` serving the tiny model.

Screenshots go to test-artifacts/ (e2e-page.png after a result, e2e-error.png with an error shown).
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import Page, expect

from tests.e2e.e2e_harness import ARTIFACTS

ServiceFactory = Callable[..., AbstractContextManager[str]]  # the `serve` fixture
RESULT_TIMEOUT_MS = 60_000  # upload + tiny-model inference; generous for a shared 2-core machine

DROP_FILE = """([name, type, data]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type}));
  const options = {dataTransfer: transfer, bubbles: true, cancelable: true};
  document.getElementById("drop").dispatchEvent(new DragEvent("drop", options));
}"""


def natural_size(page: Page, selector: str) -> tuple[int, int]:
    width, height = page.eval_on_selector(selector, "img => [img.naturalWidth, img.naturalHeight]")
    return int(width), int(height)


def wait_for_result(page: Page) -> None:
    page.wait_for_function("document.getElementById('after').naturalWidth > 0", timeout=RESULT_TIMEOUT_MS)


def download(page: Page) -> tuple[str, Image.Image]:
    """Click the download button; the suggested file name and the decoded downloaded bytes."""
    with page.expect_download() as info:
        page.click("#download")
    data = Path(info.value.path()).read_bytes()
    image = Image.open(io.BytesIO(data))
    image.load()
    return info.value.suggested_filename, image


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


def test_a_real_rainy_photo_is_derained_shown_and_downloadable(
    page: Page, serve: ServiceFactory, rainy_photo: Path
) -> None:
    original = Image.open(rainy_photo)
    with serve() as url:
        page.goto(url)
        expect(page.locator("#quality-field")).to_be_hidden()  # nothing picked yet: PNG, lossless
        page.set_input_files("#file", rainy_photo)
        wait_for_result(page)
        expect(page.locator("#status")).to_contain_text("Done in")
        expect(page.locator("#error")).to_be_hidden()
        assert natural_size(page, "#after") == original.size
        assert natural_size(page, "#compare-after") == natural_size(page, "#compare-before") == original.size
        expect(page.locator("#quality-field")).to_be_visible()  # a JPEG upload comes back as JPEG

        name, derained = download(page)
        assert name == f"{rainy_photo.stem}-derained.jpg"
        assert (derained.format, derained.size) == ("JPEG", original.size)

        page.focus("#split")  # the comparison slider works from the keyboard
        for _ in range(10):
            page.keyboard.press("ArrowLeft")
        assert page.eval_on_selector("#compare", "e => e.style.getPropertyValue('--split')") == "40%"
        screenshot(page, "e2e-page.png")

        page.select_option("#format", "png")
        expect(page.locator("#quality-field")).to_be_hidden()
        page.click("#submit")
        expect(page.locator("#download")).to_have_text(
            re.compile(r"^Download PNG"), timeout=RESULT_TIMEOUT_MS
        )
        name, lossless = download(page)
        assert name == f"{rainy_photo.stem}-derained.png"
        assert (lossless.format, lossless.size) == ("PNG", original.size)
        change = np.abs(np.asarray(lossless.convert("RGB"), np.float32) - np.asarray(original, np.float32))
        assert change.mean() > 0.5, "the derained image should differ from the upload"


def test_api_errors_are_explained_in_plain_words(page: Page, serve: ServiceFactory, tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"  # a text file renamed .png: the browser sends it as image/png
    notes.write_text("shopping list: umbrella, boots\n")
    error = page.locator("#error")
    with serve() as url:
        page.goto(url)
        page.set_input_files("#file", notes)
        expect(error).to_be_visible(timeout=RESULT_TIMEOUT_MS)
        expect(error).to_contain_text("This file could not be read as an image.")
        expect(error).to_contain_text("Details: not a decodable image")
        expect(page.locator("#download")).to_be_hidden()
        expect(page.locator("#waiting")).to_contain_text("No result")
        screenshot(page, "e2e-error.png")

        # The service's overload answer, staged: what the page says about 429 and its Retry-After.
        page.route(
            "**/derain*",
            lambda route: route.fulfill(
                status=429,
                headers={"Retry-After": "7"},
                content_type="application/json",
                body='{"detail": "the queue is full"}',
            ),
        )
        page.click("#submit")
        expect(error).to_contain_text("The service is busy right now. Please try again in 7 seconds.")
        expect(error).to_contain_text("Details: the queue is full")


def test_the_api_key_is_asked_for_and_sent_only_in_a_header(
    page: Page, serve: ServiceFactory, rainy_photo: Path
) -> None:
    secret = "e2e-secret-key"
    photo = base64.b64encode(rainy_photo.read_bytes()).decode()
    with serve(api_key=secret) as url:
        posts = []
        page.on("request", lambda request: posts.append(request) if request.method == "POST" else None)
        page.goto(url)
        page.evaluate(DROP_FILE, [rainy_photo.name, "image/jpeg", photo])  # drag and drop
        expect(page.locator("#error")).to_contain_text("This service needs an API key.")
        expect(page.locator("#key")).to_be_focused()

        page.keyboard.type(secret)
        page.click("#submit")
        wait_for_result(page)
        assert natural_size(page, "#after") == Image.open(rainy_photo).size
        assert [post.all_headers().get("authorization") for post in posts] == [None, f"Bearer {secret}"]
        assert not [post.url for post in posts if secret in post.url]
        assert page.evaluate("sessionStorage.getItem('derain-api-key')") == secret
        assert page.evaluate("localStorage.length") == 0
        page.reload()  # kept for this tab only
        expect(page.locator("#key")).to_have_value(secret)
