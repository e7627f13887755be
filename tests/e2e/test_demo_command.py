"""`gateway demo` as a user runs it: three processes come up, the printed curl lines work, Ctrl-C stops all."""

from __future__ import annotations

import http.client
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.processes import close_pipes
from tests.support.servers import free_port


def request_from_curl(line: str) -> tuple[str, str, dict[str, str], str | None]:
    args = shlex.split(line)
    method, headers, body, url = "GET", {}, None, ""
    i = 1
    while i < len(args):
        arg = args[i]
        if arg == "-X":
            method = args[i + 1]
            i += 1
        elif arg == "-H":
            name, _, value = args[i + 1].partition(": ")
            headers[name] = value
            i += 1
        elif arg == "--data":
            body = args[i + 1]
            i += 1
        elif not arg.startswith("-"):
            url = arg
        i += 1
    return method, url, headers, body


def test_demo_starts_prints_working_curl_lines_and_stops(tmp_path: Path) -> None:
    port, upstream_port, idp_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--port", str(port), "--upstream-port", str(upstream_port),
         "--idp-port", str(idp_port), "--dev-dir", str(tmp_path / ".dev")],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
        text = "\n".join(lines)
        assert "Press Ctrl-C" in text, text
        calls = [(lines[i - 1], line) for i, line in enumerate(lines) if line.startswith("curl ")]
        assert len(calls) >= 6
        outcomes = []
        for title, line in calls:
            method, url, headers, body = request_from_curl(line)
            assert url.startswith(f"http://127.0.0.1:{port}/")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(method, url.split(str(port), 1)[1], body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            conn.close()
            expect_allow = title.endswith("expect allow")
            outcomes.append((title, response.status, expect_allow))
            assert (200 <= response.status < 300) == expect_allow, (title, response.status)
        assert any(allowed for _, _, allowed in outcomes) and not all(allowed for _, _, allowed in outcomes)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(40)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            close_pipes(process)
    assert process.returncode == 0
    for p in (port, upstream_port, idp_port):  # all three children are gone
        try:
            conn = http.client.HTTPConnection("127.0.0.1", p, timeout=1)
            conn.request("GET", "/healthz")
            raise AssertionError(f"port {p} still answers after the demo stopped")
        except OSError:
            pass
