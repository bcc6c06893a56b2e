"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by selenium, against a real Redis with real jobs.

Loads every page, logs in, clicks retry, cancel and a bulk retry and checks Redis;
saves screenshots of the overview (desktop and phone widths) and of a failed job's page
under the test's tmp dir and checks they are non-blank images. Skipped when the browser
is missing locally; a failure under CI, where .ci/run installs it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import threading
import zlib
from typing import TYPE_CHECKING, Any

import pytest

import jobs
from jobs.dashboard import Dashboard
from tests.helpers import wait_until
from tests.integration._clients import make_client, unique_name
from tests.integration._dashboard import EVIL, fill_queue, served

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import redis

SECRET = "browser secret"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _browser() -> tuple[str, str]:
    """Chromium and its driver, or skip (fail under CI) naming what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else shutil.which("chromedriver")
    missing = [
        what
        for what, found in (
            ("chromium", chromium),
            ("chromedriver", driver),
            ("selenium", importlib.util.find_spec("selenium")),
        )
        if not found
    ]
    if missing:
        reason = (
            f"no {', '.join(missing)}: "
            "apt-get install chromium chromium-driver; pip install selenium"
        )
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    assert chromium is not None and driver is not None
    return chromium, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium that downloads nothing (no selenium-manager, no updates)."""
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def _png_is_not_blank(path: Path) -> tuple[int, int]:
    """The PNG's size; asserts it is a real image with more than one colour in it."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert width > 100 and height > 100, (width, height)
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            chunks.append(data[position + 8 : position + 8 + length])
        position += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    bytes_per_pixel = {2: 3, 6: 4}[colour] * depth // 8
    stride = 1 + width * bytes_per_pixel
    # The filter byte is dropped: only pixels count. A blank page is one colour.
    rows = [raw[i * stride + 1 : (i + 1) * stride] for i in range(0, height, max(height // 40, 1))]
    colours = {row[j : j + 3] for row in rows for j in range(0, len(row), bytes_per_pixel * 7)}
    assert len(colours) > 8, f"{path} looks blank ({len(colours)} colours)"
    return width, height


def _report(capsys: pytest.CaptureFixture[str], shot: Path) -> None:
    """Check a screenshot is not blank, and name it in the test run's own output."""
    width, height = _png_is_not_blank(shot)
    with capsys.disabled():  # shown even when the test passes (CI's log keeps it)
        print(f"\nscreenshot: {shot} ({width}x{height})")


def _no_sideways_scroll(driver: Any) -> None:
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"the page scrolls sideways by {overflow} px"


def test_an_operator_reads_the_failure_and_retries_from_the_browser(
    redis_url: str,
    redis_client: redis.Redis,
    browser: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from selenium.webdriver.common.by import By

    filled = fill_queue(redis_url, unique_name("shop"))
    app = Dashboard(redis_client, secret=SECRET)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with served(app) as base, make_client(redis_url, name=filled.queue) as client:
        # The overview: the queue, its failures, the chart.
        browser.get(base + "/")
        card = browser.find_element(By.ID, f"queue-{filled.queue}")
        assert "failed" in card.text and "Last 60 minutes: 7 enqueued" in card.text
        assert card.find_elements(By.CSS_SELECTOR, "svg rect.bad")
        _no_sideways_scroll(browser)
        overview = shots / "overview.png"
        assert browser.save_screenshot(str(overview))
        _report(capsys, overview)

        # From the failed tile to the list to the job: the traceback, and the script in
        # the payload and the error shown as text, never run.
        card.find_element(By.CSS_SELECTOR, "a.tile.s-failed").click()
        assert _wait_for(browser, By.CSS_SELECTOR, ".tab.on").text == "failed"
        _wait_for(browser, By.LINK_TEXT, filled.failed[0]).click()
        _wait_for(browser, By.CSS_SELECTOR, "pre.tb")
        page = browser.find_element(By.TAG_NAME, "main").text
        assert "Traceback (most recent call last)" in page
        assert f"Boom: bad input {EVIL}" in page and EVIL in page
        assert browser.execute_script("return window.pwned === undefined")
        failed_page = shots / "failed-job.png"
        assert browser.save_screenshot(str(failed_page))
        _report(capsys, failed_page)
        assert not browser.find_elements(By.CSS_SELECTOR, "button[value=retry]")  # read-only

        # Log in, back where we were, and retry this job.
        browser.find_element(By.LINK_TEXT, "Log in to act").click()
        _wait_for(browser, By.NAME, "secret").send_keys(SECRET)
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        assert "Logged in." in _notice(browser)
        browser.get(f"{base}/job?queue={filled.queue}&id={filled.failed[0]}")
        browser.find_element(By.CSS_SELECTOR, "button[value=retry]").click()
        assert "pending again" in _notice(browser)
        assert client.get(filled.failed[0]).status is jobs.JobStatus.PENDING

        # Cancel a pending job from its page.
        browser.get(f"{base}/job?queue={filled.queue}&id={filled.pending[0]}")
        browser.find_element(By.CSS_SELECTOR, "button[value=cancel]").click()
        assert "cancelled" in _notice(browser)
        assert client.get(filled.pending[0]).status is jobs.JobStatus.CANCELLED

        # Bulk retry of the failed jobs of one type, through the confirmation dialog.
        browser.get(f"{base}/jobs?queue={filled.queue}&status=failed")
        bulk = browser.find_element(By.CSS_SELECTOR, "form.bulk")
        field = bulk.find_element(By.NAME, "type")
        field.clear()
        field.send_keys("charge")
        bulk.find_element(By.TAG_NAME, "button").click()
        wait_until(lambda: _alert(browser), timeout=5).accept()
        assert "1 failed job(s) of type charge" in _notice(browser)
        assert client.get(filled.failed[1]).status is jobs.JobStatus.PENDING

        # The other pages load.
        for path, title in (("/workers", "Workers"), ("/crons", "Cron jobs")):
            browser.get(base + path)
            assert browser.find_element(By.TAG_NAME, "h1").text == title
            assert filled.queue in browser.find_element(By.TAG_NAME, "main").text

        # A phone's width: one column, nothing to scroll sideways.
        browser.set_window_size(390, 844)
        browser.get(base + "/")
        _no_sideways_scroll(browser)
        phone = shots / "overview-phone.png"
        assert browser.save_screenshot(str(phone))
        _report(capsys, phone)


def test_a_running_job_shows_a_progress_bar(
    redis_url: str,
    redis_client: redis.Redis,
    browser: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from selenium.webdriver.common.by import By

    release = threading.Event()

    def export(ctx: jobs.JobContext, payload: object) -> str:
        ctx.progress(0.42, f"row 420 of 1000 {EVIL}")
        release.wait(20)
        return "done"

    registry = jobs.Registry()
    registry.register_func("export", export)
    app = Dashboard(redis_client)
    with served(app) as base, make_client(redis_url, registry) as client:
        job_id = client.enqueue("export")
        wait_until(lambda: client.get(job_id).progress is not None, 10)
        browser.get(f"{base}/job?queue={client.queue.name}&id={job_id}")
        bar = _wait_for(browser, By.CSS_SELECTOR, "div.progress progress")
        assert browser.execute_script("return arguments[0].position", bar) == pytest.approx(0.42)
        assert bar.size["width"] > 100 and bar.size["height"] > 4
        text = browser.find_element(By.CSS_SELECTOR, "div.progress").text
        assert "42%" in text and f"row 420 of 1000 {EVIL}" in text
        assert browser.execute_script("return window.pwned === undefined")
        shot = tmp_path / "running-job.png"
        assert browser.save_screenshot(str(shot))
        _report(capsys, shot)
        release.set()
        client.wait(job_id, timeout=10)


def _wait_for(driver: Any, by: str, value: str) -> Any:
    """The first matching element, once the page a click led to has one.

    A click returns before the page it leads to is there.
    """
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 10).until(lambda d: d.find_elements(by, value))[0]


def _notice(driver: Any) -> str:
    """The notice of the page a form post led to."""
    return str(_wait_for(driver, "css selector", "p.notice").text)


def _alert(driver: Any) -> Any:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
        alert.text  # noqa: B018 (raises until the dialog is up)
    except NoAlertPresentException:
        return None
    return alert
