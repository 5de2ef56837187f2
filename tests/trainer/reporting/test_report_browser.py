"""report.html in headless Chromium: the page paints, every figure decodes where it is laid out, and the
console stays clean.

Chromium is driven over the DevTools protocol on `--remote-debugging-pipe` (JSON messages ended by NUL on
file descriptors 3 and 4), with the standard library only: no chromedriver, no Selenium. That gives what
the command-line `--screenshot` cannot: the level of each console message, failed resource loads
(the `Log` domain), uncaught exceptions, each `<img>`'s decoded size and box, and a full-page screenshot.
Skipped when no Chromium is installed (Debian: `apt-get install chromium`; `.ci/run` does it).

`REPORT_SCREENSHOTS=<dir>` keeps the screenshots there, to look at.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytest

from report_pages import PNG_SIGNATURE, ReportPage, png_pixels, png_size, sample_report_inputs
from trainer.reporting import page

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)
SESSION_SECONDS = 60  # one browser: start, every visit, close
MAX_SCREENSHOT_HEIGHT = 16000  # Chromium's largest capture

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason=f"no headless browser: none of {', '.join(CHROMIUM_NAMES)} is on PATH "
                             f"(Debian: apt-get install chromium)")

# Runs in the page after its load event: each image decoded (or failed), then what was laid out.
_LAYOUT = """
Promise.all(Array.from(document.images, image => image.decode().catch(() => null))).then(() => ({
  images: Array.from(document.images, image => {
    const box = image.getBoundingClientRect(), frame = image.parentElement.getBoundingClientRect();
    return {alt: image.alt, complete: image.complete, width: image.naturalWidth,
            height: image.naturalHeight, box: [box.left + scrollX, box.top + scrollY, box.width, box.height],
            frame: [frame.left + scrollX, frame.top + scrollY, frame.width, frame.height]};
  }),
  scrollWidth: document.documentElement.scrollWidth, clientWidth: document.documentElement.clientWidth,
  height: document.documentElement.scrollHeight}))
"""
# Starts the browser with the pipe's ends as its descriptors 3 (commands) and 4 (replies).
_TRAMPOLINE = ("import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); os.dup2(r, 3); os.dup2(w, 4); "
               "os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])")


@dataclasses.dataclass
class Visit:
    """One page load at one viewport width.

    Attributes:
      width: The viewport's CSS width (device scale 1).
      screenshot: PNG of the whole page (up to `MAX_SCREENSHOT_HEIGHT`).
      layout: `_LAYOUT`'s result: `images` (alt, complete, natural width and height, box, and `frame`: the
        box of the element holding it, which clips it), `scrollWidth`, `clientWidth`, `height`.
      console: `(level, text)` of every console message, uncaught exception and browser log entry.
    """

    width: int
    screenshot: bytes
    layout: Dict
    console: List[tuple]

    @property
    def errors(self) -> List[tuple]:
        return [entry for entry in self.console if entry[0] == "error"]


class DevTools:
    """A headless Chromium and its DevTools pipe; every call waits at most until the session's deadline."""

    def __init__(self, workdir: str):
        self._deadline = time.monotonic() + SESSION_SECONDS
        self._stderr_path = os.path.join(workdir, "chromium.stderr")
        commands, self._commands = os.pipe()
        self._replies, replies = os.pipe()
        commands, replies = (_high_copy(fd) for fd in (commands, replies))
        args = [CHROMIUM, "--headless=new", "--remote-debugging-pipe",
                f"--user-data-dir={os.path.join(workdir, 'profile')}", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
                "about:blank"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox on
        with open(self._stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(commands), str(replies), *args],
                pass_fds=(commands, replies), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=stderr, start_new_session=True)
        os.close(commands)
        os.close(replies)
        self._buffer = b""
        self._next_id = 0
        self.events: List[Dict] = []

    def call(self, method: str, session: Optional[str] = None, **params) -> Dict:
        """Sends one command and returns its result (events meanwhile are kept in `events`)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str) -> Dict:
        """The first `event` received (now or later); it leaves `events`."""
        for index, received in enumerate(self.events):
            if received.get("method") == event:
                return self.events.pop(index)
        while True:
            received = self._receive(event)
            if received.get("method") == event:
                return received
            self.events.append(received)

    def _receive(self, waiting_for: str) -> Dict:
        while b"\0" not in self._buffer:
            left = self._deadline - time.monotonic()
            ready = left > 0 and select.select([self._replies], [], [], left)[0]
            if not ready:
                raise AssertionError(f"Chromium gave no reply to {waiting_for} within {SESSION_SECONDS}s"
                                     + self.stderr_tail())
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise AssertionError(f"Chromium closed its pipe (exit status {self.process.poll()}) "
                                     f"waiting for {waiting_for}" + self.stderr_tail())
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def stderr_tail(self) -> str:
        with open(self._stderr_path, "rb") as stream:
            lines = stream.read().decode(errors="replace").splitlines()
        lines = [line for line in lines if "dbus" not in line]
        return "\nChromium's stderr (dbus lines left out):\n" + "\n".join(lines[-20:])

    def close(self) -> None:
        """Asks the browser to close; kills its process group if it has not gone within 10 s."""
        try:
            if self.process.poll() is None:
                try:
                    self.call("Browser.close")
                except (AssertionError, OSError):
                    pass
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(timeout=10)
        finally:
            os.close(self._commands)
            os.close(self._replies)


def _high_copy(fd: int) -> int:
    """A copy of `fd` numbered 10 or more (the original closed), so the trampoline's dup2 onto 3 and 4
    cannot overwrite the other end."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


def _console(event: Dict) -> Optional[tuple]:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled":
        level = {"assert": "error", "warning": "warning"}.get(params["type"], params["type"])
        text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
        return level, text
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return "error", details.get("exception", {}).get("description", details.get("text", ""))
    if method == "Log.entryAdded":
        entry = params["entry"]
        return entry["level"], f"{entry['text']} {entry.get('url', '')}".strip()
    return None


def visit_page(path: str, widths: Sequence[int] = (1280,), viewport_height: int = 900) -> List[Visit]:
    """Loads the page at `path` once per viewport width in one headless Chromium; what each load showed."""
    visits = []
    with tempfile.TemporaryDirectory(prefix="report_browser_") as workdir:
        browser = DevTools(workdir)
        try:
            target = browser.call("Target.createTarget", url="about:blank")["targetId"]
            session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                browser.call(f"{domain}.enable", session=session)
            for width in widths:
                browser.call("Emulation.setDeviceMetricsOverride", session=session, width=width,
                             height=viewport_height, deviceScaleFactor=1, mobile=False)
                navigated = browser.call("Page.navigate", session=session, url=f"file://{os.path.abspath(path)}")
                assert "errorText" not in navigated, navigated
                browser.wait_for("Page.loadEventFired")
                layout = browser.call("Runtime.evaluate", session=session, expression=_LAYOUT,
                                      awaitPromise=True, returnByValue=True)["result"]["value"]
                height = min(int(layout["height"]), MAX_SCREENSHOT_HEIGHT)
                shot = browser.call("Page.captureScreenshot", session=session, format="png",
                                    captureBeyondViewport=True,
                                    clip=dict(x=0, y=0, width=width, height=height, scale=1))
                browser.call("Runtime.evaluate", session=session, expression="0")  # events before it arrive
                console = [entry for entry in map(_console, browser.events) if entry]
                browser.events.clear()
                visits.append(Visit(width, base64.b64decode(shot["data"]), layout, console))
        finally:
            browser.close()
    return visits


def _looks_painted(pixels: np.ndarray) -> bool:
    """More than a blank or text-only page: over 1,000 distinct colours and a spread of brightness."""
    rgb = np.round(pixels[..., :3].reshape(-1, 3) * 255).astype(np.int64)
    colours = np.unique(rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2]).size
    return colours > 1000 and float(pixels[..., :3].std()) > 0.05


def _grid(pixels: np.ndarray, cells: int = 24) -> np.ndarray:
    """Mean brightness over a `cells` x `cells` grid: comparable whatever size the image was drawn at."""
    grey = pixels[..., :3].mean(axis=2)
    return np.array([[cell.mean() for cell in np.array_split(band, cells, axis=1)]
                     for band in np.array_split(grey, cells, axis=0)])


def _keep(visits: Sequence[Visit], name: str) -> None:
    directory = os.environ.get("REPORT_SCREENSHOTS")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for visit in visits:
            with open(os.path.join(directory, f"{name}_{visit.width}.png"), "wb") as stream:
                stream.write(visit.screenshot)


def test_the_report_paints_every_figure_where_laid_out_with_a_clean_console(tmp_path):
    inputs = sample_report_inputs(names=["cat <b>&", "dog", "bird", "rare fish"])
    path, _ = page.write_report(str(tmp_path / "report.html"), inputs)
    embedded = ReportPage(open(path, encoding="utf-8").read()).images
    assert len(embedded) == 6

    start = time.perf_counter()
    visits = visit_page(path, widths=(1280, 800, 600))
    print(f"three visits in headless Chromium: {time.perf_counter() - start:.1f}s", file=sys.stderr)
    _keep(visits, "report")
    clipped = set()
    for visit in visits:
        assert not visit.errors, (visit.width, visit.console)
        layout = visit.layout
        # Nothing wider than the window: the figures shrink to fit down to page.MIN_SCALE, and past
        # that a figure (or a table) scrolls sideways inside its own box, not the page.
        assert layout["scrollWidth"] <= layout["clientWidth"] == visit.width, (visit.width, layout)
        shot_width, shot_height = png_size(visit.screenshot)
        assert (shot_width, shot_height) == (visit.width, min(layout["height"], MAX_SCREENSHOT_HEIGHT))
        assert shot_height > 2000, "the page is too short for six figures"
        shot = png_pixels(visit.screenshot)[..., :3]
        assert _looks_painted(shot), f"the screenshot at {visit.width} px looks blank"
        # Every <img> decoded the very PNG the page embeds, and that is what was painted in its box.
        assert [image["alt"] for image in layout["images"]] == [image["alt"] for image in embedded]
        for shown, image in zip(layout["images"], embedded):
            assert shown["complete"] and (shown["width"], shown["height"]) == png_size(image["png"]), shown
            left, top, width, height = shown["box"]
            frame_left, _, frame_width, _ = shown["frame"]
            assert 0 <= frame_left and frame_left + frame_width <= visit.width, (visit.width, shown)
            # At its natural size, or shrunk to its box but never below page.MIN_SCALE (its text legible).
            scale = width / shown["width"]
            assert page.MIN_SCALE - 0.01 <= scale <= 1.0 + 1e-6, (visit.width, shown, scale)
            assert width == pytest.approx(min(shown["width"], max(frame_width, page.MIN_SCALE * shown[
                "width"])), abs=1.5), (visit.width, shown)
            # What its box shows: all of it, or its left part when wider than the box (scrolled to 0).
            visible = min(left + width, frame_left + frame_width) - left
            if visible < width - 1:
                clipped.add(visit.width)
            # Inside its 1 px border; the figure may be drawn smaller than its PNG (max-width: 100%).
            painted = shot[round(top) + 1:round(top + height) - 1, round(left) + 1:round(left + visible) - 1]
            assert float(painted.std()) > 0.05, f"{image['alt']} is blank at {visit.width} px"
            # Coarse grids of both agree (0.97 or more measured; other figures of the page: 0.5 at most).
            pixels = png_pixels(image["png"])
            pixels = pixels[:, :max(1, round(pixels.shape[1] * min(visible / width, 1.0)))]
            match = np.corrcoef(_grid(painted).ravel(), _grid(pixels).ravel())[0, 1]
            assert match > 0.9, f"{image['alt']} at {visit.width} px is not the embedded figure ({match:.3f})"
    # The narrow window did make a figure scroll in its box (the clipped path above ran), the wide not.
    assert clipped == {600}, clipped


def test_the_checks_catch_a_broken_page(tmp_path):
    """The checks above are not vacuous: each kind of failure on a deliberately broken page is seen."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><body><p>broken</p>"
        f"<img alt='truncated' src='data:image/png;base64,{base64.b64encode(PNG_SIGNATURE).decode()}'>"
        "<img alt='missing' src='missing.png'>"
        "<script>console.error('an error logged'); console.warn('a warning');"
        "throw new Error('an uncaught error');</script></body></html>")
    visit, = visit_page(str(broken))
    texts = " | ".join(text for _, text in visit.errors)
    for expected in ("an error logged", "an uncaught error", "ERR_FILE_NOT_FOUND"):
        assert expected in texts, (expected, visit.console)
    assert ("warning", "a warning") in visit.console and ("warning", "a warning") not in visit.errors
    assert [(image["alt"], image["width"]) for image in visit.layout["images"]] == [("truncated", 0),
                                                                                   ("missing", 0)]
    assert not _looks_painted(png_pixels(visit.screenshot))  # text and broken-image icons only
