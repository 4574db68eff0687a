"""A person labeling one task in Label Studio's editor, driven in Debian's Chromium by sync Playwright.

No browser download: Playwright drives /usr/bin/chromium (`apt-get install chromium`) headless.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# The prediction tab reads "v1 · 90.00%" (model version, then the prediction's score).
_PREDICTION_TAB = re.compile(r"·\s*\d+(?:\.\d+)?%")
_HOTKEY_HINT = re.compile(r"\[\w+\]$")
_IMAGE_DECODED = "el => el.complete && el.naturalWidth > 0"


def _choice_name(accessible_name: str) -> str:
    """"dog[2]" -> "dog" (choices' accessible names carry their hotkey hint)."""
    return _HOTKEY_HINT.sub("", accessible_name).strip()


def label_in_browser(
    url: str,
    email: str,
    password: str,
    project_id: int,
    task_id: int,
    choice: str,
    *,
    timeout: float = 60,
    screenshot: Path | str | None = None,
    image_name: str = "image",
) -> dict[str, Any]:
    """Log in at `url`, open task `task_id` of project `project_id` in the editor, pick `choice` and
    submit. Answers {"status": 201, "annotation": <the POST's response JSON>, "prediction_shown": bool,
    "preselected": <the choice checked when the editor opened, or None>, "seconds": float}.
    `screenshot` (a path) saves the page just before Submit. Raises on any step that times out."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    ms = timeout * 1000
    url = url.rstrip("/")
    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="ls-chromium-") as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            context.set_default_timeout(ms)
            page = context.pages[0] if context.pages else context.new_page()

            page.goto(f"{url}/user/login/")
            # The form's labels are not tied to its inputs: locate by name.
            page.locator('input[name="email"]').fill(email)
            page.locator('input[name="password"]').fill(password)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(lambda u: "/user/login" not in u)

            page.goto(f"{url}/projects/{project_id}/data?task={task_id}")
            target = page.get_by_role("checkbox", name=re.compile("^" + re.escape(choice) + r"(\[\w+\])?$"))
            target.first.wait_for(state="visible")
            image = page.get_by_role("img", name=image_name, exact=True)
            image.first.wait_for(state="visible")
            page.wait_for_function(_IMAGE_DECODED, arg=image.first.element_handle(), timeout=ms)

            try:  # the prediction tab renders with the editor; allow it a moment
                page.get_by_text(_PREDICTION_TAB).first.wait_for(state="visible", timeout=min(ms, 5000))
                prediction_shown = True
            except PlaywrightTimeoutError:
                prediction_shown = False
            # The Data Manager's own checkboxes ("Select all rows", "Select Task 3") are not choices.
            preselected = None
            for box in page.get_by_role("checkbox", checked=True).all():
                found = re.search(r'checkbox "([^"]*)"', box.aria_snapshot())
                if found and not found.group(1).startswith("Select "):
                    preselected = _choice_name(found.group(1))
                    break

            box = target.first
            if not box.is_checked():
                box.click()
            if screenshot is not None:
                page.screenshot(path=str(screenshot))
            with page.expect_response(
                lambda r: r.request.method == "POST"
                and re.search(rf"/api/tasks/{task_id}/annotations/?(\?|$)", r.url) is not None,
                timeout=ms,
            ) as info:
                page.get_by_role("button", name="Submit current annotation").click()
            response = info.value
            body = response.json()
            return {
                "status": response.status,
                "annotation": body,
                "prediction_shown": prediction_shown,
                "preselected": preselected,
                "seconds": round(time.monotonic() - started, 2),
            }
        finally:
            context.close()
