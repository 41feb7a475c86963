"""The status page in a real headless browser (Debian's chromium and chromium-driver, driven by selenium),
served by a real `ticketmail serve` process over a real SQLite file, with screenshots saved by the test."""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ticketmail.errors import SourceError
from ticketmail.sources.health import HealthStore

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _tm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ticketmail", *args], capture_output=True, text=True, timeout=120, check=True
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    db = tmp_path / "tickets.sqlite3"
    _tm("ingest", "--db", str(db), "--no-progress", str(EXAMPLES / "mail"))
    key = _tm("apikey", "add", "--db", str(db), "--ip", "127.0.0.1", "--permission", "view_status").stdout
    secret = key.strip().splitlines()[-1]
    config = tmp_path / "ticketmail.toml"
    config.write_text(
        f'[storage]\nsqlite = "{db}"\n\n'
        '[[mailboxes]]\nname = "support"\nprotocol = "maildir"\npath = "maildir"\n\n'
        '[[mailboxes]]\nname = "sales-imap"\nprotocol = "maildir"\npath = "other"\n',
        encoding="utf-8",
    )
    state = Path(f"{db}.state")
    store = HealthStore(state / "health.json")
    now = _dt.datetime.now(_dt.timezone.utc)
    store.record_success("support", at=now, processed=7, waiting=2)
    store.record_failure(
        "sales-imap", at=now, error=SourceError("connection refused by imap.example.com", stage="connect")
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticketmail", "serve", "--db", str(db), "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://([0-9.]+):(\d+)/", line)
        assert match, line
        yield f"http://{match.group(1)}:{match.group(2)}", secret
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _driver(profile: str) -> Any:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMEDRIVER) and os.path.exists(CHROMIUM)):
        pytest.skip("chromium and chromium-driver are not installed (scripts/system-deps installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TICKETMAIL_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_status_page_in_a_browser(served: tuple[str, str], tmp_path: Path) -> None:
    base, secret = served
    profile = tempfile.mkdtemp(prefix="tm-chromium-")
    driver = _driver(profile)
    try:
        from selenium.webdriver.common.by import By

        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"X-API-Key": secret}})
        driver.set_window_size(1280, 900)
        driver.get(f"{base}/status")
        assert driver.title == "ticketmail status"
        cards = {c.get_attribute("data-mailbox"): c.text for c in driver.find_elements(By.CSS_SELECTOR, ".card")}
        assert set(cards) == {"support", "sales-imap"}
        assert "ok" in cards["support"]
        assert "2" in cards["support"]
        assert "unreachable" in cards["sales-imap"]
        assert "connection refused" in cards["sales-imap"]
        rows = driver.find_elements(By.CSS_SELECTOR, "#decisions tbody tr")
        assert len(rows) >= 10
        assert "created" in driver.find_element(By.ID, "decisions").text
        assert driver.find_element(By.ID, "quarantine").text.startswith("0 message(s)")
        desktop = _artifacts(tmp_path) / "status-desktop.png"
        assert driver.save_screenshot(str(desktop))
        assert desktop.stat().st_size > 10_000

        driver.set_window_size(390, 844)  # a phone
        driver.get(f"{base}/status")
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the page scrolls sideways on a phone by {overflow}px"
        phone = _artifacts(tmp_path) / "status-phone.png"
        assert driver.save_screenshot(str(phone))
        assert phone.stat().st_size > 10_000
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
