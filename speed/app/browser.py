"""Drive the page in a real headless Chromium: load it, choose settings, click Generate, wait for
the pictures, take a screenshot. For the browser test and for the README's screenshot:

    python -m speed.app.browser http://127.0.0.1:7860/ docs/app.png [--settings '{"seeds": 6}']

Talks the Chrome DevTools Protocol over the pipes of `--remote-debugging-pipe` (JSON messages
ending in a NUL byte; Chromium reads fd 3 and writes fd 4), so it needs nothing beyond the
standard library and a `chromium` binary (Debian's package).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# Sets the form from a settings object (the page's field ids), then clicks Generate.
APPLY = """(settings => {
  for (const [key, value] of Object.entries(settings)) {
    if (key === "classes") {
      for (const box of document.querySelectorAll("#classes input"))
        box.checked = value.includes(Number(box.value));
    } else if (key === "prompts") document.getElementById(key).value = value.join("\\n");
    else document.getElementById(key).value = value;
  }
  document.getElementById("generate").click();
})"""


# Where each picture's pixels are on the page: inside the border, at its natural size.
PICTURE_BOXES = """Object.fromEntries(["grid", "strip"].map(id => {
  const img = document.getElementById(id), s = getComputedStyle(img);
  const r = img.getBoundingClientRect();
  const x = r.x + window.scrollX + parseFloat(s.borderLeftWidth);
  const y = r.y + window.scrollY + parseFloat(s.borderTopWidth);
  return [id, [x, y, img.naturalWidth, img.naturalHeight]];
}))"""


def find_chromium() -> str | None:
    """The first of chromium, chromium-browser, google-chrome on PATH, or None."""
    names = ("chromium", "chromium-browser", "google-chrome")
    return next((path for path in map(shutil.which, names) if path), None)


class DevTools:
    """A headless Chromium and one page of it, driven over the DevTools pipe."""

    def __init__(self, binary: str, width: int, height: int):
        to_chrome, self._send_fd = os.pipe()  # Chromium reads commands on fd 3
        self._recv_fd, from_chrome = os.pipe()  # and writes replies and events on fd 4

        def pipes_at_3_and_4():
            os.dup2(to_chrome, 3)
            os.dup2(from_chrome, 4)

        self.profile = tempfile.mkdtemp(prefix="speed-chromium-")
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        args += ["--remote-debugging-pipe", f"--user-data-dir={self.profile}", "about:blank"]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=pipes_at_3_and_4,
            pass_fds=(3, 4),
        )
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer, self._next_id, self.session = b"", 0, None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.resize(width, height)

    def call(self, method: str, **params) -> dict:
        """Send one command (to the page once attached); its result. RuntimeError on an error."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._recv_fd, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, poll: float = 0.2):
        """Poll `expression` until it is truthy; its value. TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {timeout:g} s still false in the page: {expression}")
            time.sleep(poll)
        return value

    def resize(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def screenshot(self, width: int) -> bytes:
        """A PNG of the whole page: the window is first made as tall as the page (twice: the
        scrollbar it loses changes the layout), so what was measured is what is captured."""
        for _ in range(2):
            height = self.call("Page.getLayoutMetrics")["cssContentSize"]["height"]
            self.resize(width, math.ceil(height))
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.process.wait(timeout=10)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        os.close(self._send_fd)
        os.close(self._recv_fd)
        shutil.rmtree(self.profile, ignore_errors=True)


def generate_in_browser(
    url: str,
    out: str | os.PathLike,
    settings: dict | None = None,
    binary: str | None = None,
    width: int = 1400,
    height: int = 900,
    timeout: float = 600.0,
) -> dict:
    """Load the page at `url`, apply `settings` (field id -> value; `classes` a list), click
    Generate, wait until the pictures are shown and write a screenshot PNG to `out`.

    Returns {"job": the app's job id, "progress": the progress texts seen while sampling,
    "message": the final status, "boxes": {"grid", "strip": [x, y, width, height] of each
    picture's pixels in the screenshot}}. RuntimeError (with the page's message) when the page
    reports an error.
    """
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    browser = DevTools(binary, width, height)
    try:
        browser.call("Page.navigate", url=url)
        browser.wait_for("document.querySelectorAll('#checkpoint option').length > 0", 60)
        browser.evaluate(f"{APPLY}({json.dumps(settings or {})})")
        progress, deadline = [], time.monotonic() + timeout
        while not browser.evaluate("document.body.dataset.done || ''"):
            if browser.evaluate("document.getElementById('status').className") == "error":
                raise RuntimeError(
                    browser.evaluate("document.getElementById('message').textContent")
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"no pictures after {timeout:g} s")
            text = browser.evaluate("document.getElementById('message').textContent")
            if text and (not progress or progress[-1] != text):
                progress.append(text)
            time.sleep(0.2)
        job = browser.evaluate("document.body.dataset.done")
        message = browser.evaluate("document.getElementById('message').textContent")
        shot = browser.screenshot(width)
        boxes = browser.evaluate(PICTURE_BOXES)  # in the layout of the screenshot
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(shot)
    finally:
        browser.close()
    return {"job": job, "progress": progress, "message": message, "boxes": boxes}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the page, e.g. http://127.0.0.1:7860/")
    parser.add_argument("out", type=Path, help="the screenshot PNG to write")
    parser.add_argument(
        "--settings", type=json.loads, default={}, help="JSON, e.g. '{\"seeds\": 6}'"
    )
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    seen = generate_in_browser(args.url, args.out, args.settings, width=args.width,
                               height=args.height)  # fmt: skip
    print(f"{args.out}: {seen['message']} after {len(seen['progress'])} progress updates")


if __name__ == "__main__":
    main()
