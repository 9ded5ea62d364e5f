"""Headless Chromium for the MLflow UI tests: screenshots, the rendered page's text, and the
page state the UI keeps in the browser.

Each call is one ``chromium --headless`` process on a profile folder of the test's own. The
flags that stop its background connections matter on a closed network: without them its
requests to the outside are refused and it stalls. The UI is a single-page app that fetches
its data after the page loads; ``--virtual-time-budget`` lets it run that long (in virtual
time, so a fast machine does not wait) before the screenshot or the DOM is taken.

The UI keeps a few choices in the browser's localStorage, not in the URL: which parent runs
are expanded in the runs table, for one. :meth:`Chromium.keep_local_storage` writes such
entries once, over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages
ending in a NUL byte on file descriptors 3 and 4), into the profile that the later calls use.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
QUIET_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
TIMEOUT_S = 120


@dataclass(frozen=True)
class Chromium:
    """Headless Chromium on one profile folder."""

    profile: Path
    window: str = "1400,1000"
    budget_ms: int = 20000
    """Virtual time the page gets to fetch and render its data."""

    def flags(self) -> list[str]:
        return [CHROMIUM, *QUIET_FLAGS, f"--user-data-dir={self.profile}"]

    def capture(self, url: str, path: Path) -> str:
        """A PNG of the page at ``url`` once it has rendered, and its visible text then."""
        path.parent.mkdir(parents=True, exist_ok=True)
        done = self._run("--run-all-compositor-stages-before-draw", "--hide-scrollbars",
                         f"--screenshot={path}", "--dump-dom", url)  # fmt: skip
        assert path.is_file(), f"no screenshot of {url}: {done.stderr[-2000:]}"
        return visible_text(done.stdout)

    def text(self, url: str) -> str:
        """The visible text of the page at ``url`` once it has rendered (scripts and styles
        left out, white space collapsed)."""
        return visible_text(self._run("--dump-dom", url).stdout)

    def keep_local_storage(self, origin: str, items: dict[str, str]) -> None:
        """Write ``items`` to the localStorage of ``origin`` (``http://host:port``) in the
        profile; ``origin`` must serve some page (``/health`` will do)."""
        with DevTools(self.flags(), f"{origin}/health") as tools:
            session = tools.attach_to_page()
            tools.wait_for(session, "location.origin", origin)
            for key, value in items.items():
                expression = f"localStorage.setItem({json.dumps(key)}, {json.dumps(value)})"
                tools.call("Runtime.evaluate", {"expression": expression}, session)

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        window = (f"--window-size={self.window}", f"--virtual-time-budget={self.budget_ms}")
        done = subprocess.run(
            [*self.flags(), *window, *argv],
            capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"chromium exited with {done.returncode}: {done.stderr[-2000:]}"
        )
        return done


def visible_text(dom: str) -> str:
    """The text of an HTML document as a reader sees it, on one line."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL | re.IGNORECASE)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


class DevTools:
    """Chromium driven over the DevTools protocol on a pipe, for as long as the block lasts."""

    def __init__(self, flags: list[str], url: str) -> None:
        self._to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, self._from_chrome_w = os.pipe()
        self._buffer = b""
        self._next_id = 0
        self._process = subprocess.Popen(
            [*flags, "--remote-debugging-pipe", url],
            pass_fds=(3, 4),
            preexec_fn=self._wire,  # noqa: PLW1509 - only dup2 calls, before exec
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(self._to_chrome_r)
        os.close(self._from_chrome_w)

    def _wire(self) -> None:
        """In the child: the protocol's pipes on descriptors 3 (commands) and 4 (replies)."""
        commands, replies = os.dup(self._to_chrome_r), os.dup(self._from_chrome_w)
        os.dup2(commands, 3)
        os.dup2(replies, 4)

    def __enter__(self) -> DevTools:
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.call("Browser.close")
            self._process.wait(timeout=30)
        finally:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            os.close(self._to_chrome)
            os.close(self._from_chrome)

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Send one command and return its result; raises on a protocol error."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})

    def attach_to_page(self) -> str:
        """The session of the browser's one page."""
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        return self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})[
            "sessionId"
        ]

    def wait_for(self, session: str, expression: str, value: str, timeout_s: float = 30) -> None:
        """Until ``expression`` evaluates to ``value`` in the page (it is loading)."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.call("Runtime.evaluate", {"expression": expression}, session)
            if result.get("result", {}).get("value") == value:
                return
            assert time.monotonic() < deadline, f"{expression} never became {value!r}"
            time.sleep(0.2)

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 16)
            assert chunk, "chromium closed the DevTools pipe"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(line)
