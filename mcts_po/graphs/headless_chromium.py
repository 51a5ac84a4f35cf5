"""Drive a headless Chromium over the DevTools protocol with the standard library only.

Used by the viewer's browser test (tests/test_viewer_browser.py) and by
scripts/bench_viewer.py to open the offline HTML viewer in a real browser, read the
rendered DOM, click elements with real mouse events and take screenshots. No Python
package that downloads browsers is involved: it runs the system's `chromium`
(Debian: `apt-get install chromium`) with `--remote-debugging-port=0`, reads the port
from `DevToolsActivePort` in a fresh profile directory, and speaks the DevTools
protocol over a minimal WebSocket client written here (RFC 6455: masked client
frames, unmasked server frames, fragmentation, ping/pong).

    from mcts_po.graphs.headless_chromium import ChromiumPage, find_chromium
    with ChromiumPage(find_chromium()) as page:
        page.open("file:///tmp/run.html", ready="document.body.dataset.ready === '1'")
        print(page.evaluate("document.querySelectorAll('.node').length"))
        page.click('.node[data-node-id="3"]')
        page.screenshot("/tmp/viewer.png")
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--hide-scrollbars", "--mute-audio",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH (or /usr/bin/chromium), else None."""
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


class BrowserError(RuntimeError):
    """Chromium did not start, the protocol failed, or page JavaScript threw."""


class _WebSocket:
    """Just enough of a WebSocket client for the DevTools protocol (text frames)."""

    def __init__(self, url: str, timeout: float):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise BrowserError("DevTools closed the connection during the WebSocket handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise BrowserError(f"WebSocket handshake refused: {head[:200]!r}")

    def _read_exact(self, size: int) -> bytes:
        chunks, have = [self.buffer], len(self.buffer)
        while have < size:
            chunk = self.sock.recv(max(65536, size - have))
            if not chunk:
                raise BrowserError("DevTools connection closed")
            chunks.append(chunk)
            have += len(chunk)
        data = b"".join(chunks)
        self.buffer = data[size:]
        return data[:size]

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        header = bytes([0x80 | opcode])
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 1 << 16:
            header += bytes([0x80 | 126]) + size.to_bytes(2, "big")
        else:
            header += bytes([0x80 | 127]) + size.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (size // 4 + 1))[:size], "big")
                  ).to_bytes(size, "big") if size else b""
        self.sock.sendall(header + mask + masked)

    def send_text(self, text: str) -> None:
        self._send_frame(0x1, text.encode("utf-8"))

    def recv_text(self) -> str:
        parts: list[bytes] = []
        while True:
            first, second = self._read_exact(2)
            opcode, size = first & 0x0F, second & 0x7F
            if size == 126:
                size = int.from_bytes(self._read_exact(2), "big")
            elif size == 127:
                size = int.from_bytes(self._read_exact(8), "big")
            mask = self._read_exact(4) if second & 0x80 else None
            payload = self._read_exact(size)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise BrowserError("DevTools closed the WebSocket")
            if opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if first & 0x80:
                    return b"".join(parts).decode("utf-8")

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class ChromiumPage:
    """One headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary: str | None = None, width: int = 1400, height: int = 900, timeout: float = 60.0):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("no chromium binary found (Debian: apt-get install chromium)")
        self.width, self.height, self.timeout = width, height, timeout
        self.profile_dir = tempfile.mkdtemp(prefix="mcts-po-chromium-")
        self.process: subprocess.Popen | None = None
        self.ws: _WebSocket | None = None
        self.next_id = 0

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "ChromiumPage":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        log_path = Path(self.profile_dir) / "chromium-stderr.log"
        self.log = open(log_path, "wb")
        command = [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile_dir}",
                   "--remote-debugging-port=0", f"--window-size={self.width},{self.height}", "about:blank"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        port_file = Path(self.profile_dir) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode}: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise BrowserError("chromium did not open its DevTools port in time")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        page_url = None
        while page_url is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                    targets = json.loads(response.read())
                page_url = next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)
            except OSError:
                pass
            if page_url is None:
                if time.monotonic() > deadline:
                    raise BrowserError("chromium has no page target")
                time.sleep(0.05)
        self.ws = _WebSocket(page_url, self.timeout)
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.call("Browser.close")
            except (BrowserError, OSError):
                pass
            self.ws.close()
            self.ws = None
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the group this class started
                self.process.wait(timeout=10)
            self.process = None
            self.log.close()
        shutil.rmtree(self.profile_dir, ignore_errors=True)

    # ------------------------------------------------------------------ protocol
    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one DevTools command and return its result (events are skipped)."""
        if self.ws is None:
            raise BrowserError("the browser is not started")
        self.next_id += 1
        message_id = self.next_id
        self.ws.send_text(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self.ws.recv_text())
            if message.get("id") == message_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page and return its (JSON-able) value."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"page JavaScript failed: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Poll `expression` until it is truthy; return its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for: {expression}")
            time.sleep(0.02)

    def open(self, url: str, ready: str = "document.readyState === 'complete'") -> None:
        """Navigate to `url` and wait until the `ready` expression is true."""
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        self.wait_for(ready)

    def click(self, selector: str) -> None:
        """Scroll the first element matching `selector` into view and click its centre
        with real mouse events (moved, pressed, released)."""
        # After a scroll, content-visibility:auto sections lay out their real size in the next
        # frames and the element moves: scroll again until its box is stable, then click.
        box = self.evaluate(
            "(async function(){var e=document.querySelector(" + json.dumps(selector) + ");"
            "if(!e) return null; var frame=function(){return new Promise(function(done){"
            "requestAnimationFrame(function(){requestAnimationFrame(done);});});};"
            "var last=null, r;"
            "for(var i=0;i<10;i++){e.scrollIntoView({block:'center', inline:'nearest'}); await frame();"
            "r=e.getBoundingClientRect(); if(last && last.top===r.top && last.left===r.left) break; last=r;}"
            "return [r.left + Math.min(r.width/2, 120), r.top + r.height/2];})()")
        if box is None:
            raise BrowserError(f"no element matches {selector!r}")
        x, y = box
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def screenshot(self, path: str | os.PathLike) -> Path:
        """Save a PNG of the viewport."""
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
