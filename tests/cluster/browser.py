"""A headless Chromium for the console's browser tests, driven over W3C WebDriver (Debian's
chromium and chromium-driver; plain HTTP with httpx, so no driver library), and the console
served by uvicorn on a loopback port, in this process so a test can read every request body it
received."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tests.cluster.harness import free_port

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # W3C WebDriver web element
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / ".devkit" / "console-screenshots"
WAIT_SECONDS = 60
BROWSER_MARKER = "DOCRELAY_TEST_BROWSER"


class Browser:
    def __init__(self, driver_url: str, session: str) -> None:
        self.http = httpx.Client(base_url=f"{driver_url}/session/{session}", timeout=60)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, path, json=body if body is not None else None)
        value = response.json().get("value")
        if response.status_code >= 400:
            raise AssertionError(f"WebDriver {method} {path}: {value}")
        return value

    def go(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        found = self._call("POST", "/element", {"using": "css selector", "value": css})
        if not isinstance(found, dict) or ELEMENT not in found:
            raise AssertionError(f"no element {css} on {self.url()}: {found}")
        return str(found[ELEMENT])

    def type(self, css: str, text: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/click", {})

    def run(self, script: str, *args: Any) -> Any:
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def text(self, css: str = "body") -> str:
        return str(self.run("return document.querySelector(arguments[0]).innerText", css))

    def url(self) -> str:
        return str(self._call("GET", "/url"))

    def size(self, width: int, height: int) -> None:
        self._call("POST", "/window/rect", {"width": width, "height": height})

    def press_tab(self) -> None:
        tab = "\ue004"
        self._call(
            "POST",
            "/actions",
            {"actions": [{"type": "key", "id": "kb", "actions": [
                {"type": "keyDown", "value": tab}, {"type": "keyUp", "value": tab}]}]},
        )  # fmt: skip

    def wait_for(self, script: str, what: str, *args: Any) -> Any:
        deadline = time.monotonic() + WAIT_SECONDS
        last: Any = None
        while time.monotonic() < deadline:
            last = self.run(script, *args)
            if last:
                return last
            time.sleep(0.25)
        raise AssertionError(f"the page never showed {what}; it shows:\n{self.text()[-2000:]}")

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))
        return path


@contextmanager
def chromium() -> Iterator[Browser]:
    driver, binary = shutil.which("chromedriver"), shutil.which("chromium")
    if driver is None or binary is None:
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    port = free_port()
    # The profile, and every temporary directory the driver and Chromium make, in one place.
    scratch = Path(tempfile.mkdtemp(prefix="docrelay-chromium-"))
    marker = uuid.uuid4().hex  # in the environment of the driver and all it starts
    process = subprocess.Popen(
        [driver, f"--port={port}", "--allowed-ips=127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, BROWSER_MARKER: marker, "TMPDIR": str(scratch)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/status", timeout=2).json()["value"]["ready"]:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("chromedriver did not start")
            time.sleep(0.1)
        options = {
            "binary": binary,
            "args": [
                "--headless=new",
                "--no-sandbox",  # tests run as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                "--no-first-run",
                f"--user-data-dir={scratch / 'profile'}",  # chromedriver's own would stay
            ],
        }
        created = httpx.post(
            f"{url}/session",
            json={"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}},
            timeout=60,
        ).json()["value"]
        browser = Browser(url, created["sessionId"])
        try:
            yield browser
        finally:
            browser.http.delete("")
    finally:
        process.terminate()
        process.wait(timeout=10)
        _kill_left_behind(marker)
        shutil.rmtree(scratch, ignore_errors=True)


def _marked(marker: str) -> list[int]:
    needle = f"{BROWSER_MARKER}={marker}\0".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _kill_left_behind(marker: str) -> None:
    """Chromium (its browser, renderer, GPU and crashpad processes) can outlive the driver and
    the session; each inherited the driver's environment, marker included. Waits until they
    are gone, so none writes into the directory removed next."""
    deadline = time.monotonic() + 10
    while (left := _marked(marker)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """The app on a loopback port, until the block ends."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=3
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise AssertionError("the console did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
