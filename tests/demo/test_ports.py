"""A port another process holds is a one-line error at once, for every command that listens.

Each test holds real sockets on 127.0.0.1: a *taken* port has a listening socket on it (another
server); a *reserved* port is bound with ``SO_REUSEADDR`` and not listening, so that no other process
can take it while a command under test may still check and bind it (Linux lets two ``SO_REUSEADDR``
sockets share a port until one listens). No test counts on a port being free by luck.
"""

from __future__ import annotations

import http.client
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from gateway.demo import stack
from gateway.demo.ports import PortUnavailable, check_port
from gateway.demo.tenants import CONTOSO_TENANT
from tests.support.processes import close_pipes

ROOT = Path(__file__).resolve().parents[2]
#: The commands must give up within this; a bound on the wait, not a measurement.
EXIT_BOUND_SECONDS = 10
START_BOUND_SECONDS = 90


@contextmanager
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 with a listening socket on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@contextmanager
def reserved_ports(count: int) -> Iterator[list[int]]:
    """Distinct ports bound with SO_REUSEADDR, not listening: free for the command under test only."""
    with ExitStack() as held:
        ports: list[int] = []
        for _ in range(count):
            sock = held.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        yield ports


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


def run_gateway(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=cwd, env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=EXIT_BOUND_SECONDS,
    )  # fmt: skip


def demo_args(ports: list[int], dev_dir: Path) -> list[str]:
    return ["demo", "--port", str(ports[0]), "--upstream-port", str(ports[1]), "--idp-port", str(ports[2]),
            "--dev-dir", str(dev_dir)]  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_check_port_tells_a_taken_port_from_a_free_one() -> None:
    with taken_port() as port:
        with pytest.raises(PortUnavailable) as caught:
            check_port("127.0.0.1", port)
        assert (caught.value.port, caught.value.reason) == (port, "already in use")
    with reserved_ports(1) as (port,):
        check_port("127.0.0.1", port)  # bound, not listening, with SO_REUSEADDR: a server could bind it
    with pytest.raises(PortUnavailable, match="cannot resolve"):
        check_port("no-such-host.invalid", 8080)


@pytest.mark.parametrize(
    ("command", "what"),
    [
        (["serve"], "the gateway"),
        (["dev-idp"], "the dev identity provider"),
        (["demo-upstream"], "the reference services"),
    ],
)
def test_a_server_command_refuses_a_taken_port_in_one_line(command: list[str], what: str, tmp_path: Path) -> None:
    with taken_port() as port:
        result = run_gateway(*command, "--port", str(port), cwd=ROOT)
    assert result.returncode == 1
    line = one_line(result)
    assert f"port {port} on 127.0.0.1 for {what} is not available (already in use)" in line
    assert "--port PORT" in line and line.startswith(f"gateway {command[0]}: ")


def test_serve_checks_the_port_its_configuration_names(tmp_path: Path) -> None:
    with taken_port() as port:
        config = tmp_path / "gateway.toml"
        config.write_text(f'[server]\nport = {port}\n[audit]\npath = "{tmp_path / "audit.sqlite"}"\n'
                          f"[identity]\ntenants = ['{CONTOSO_TENANT}']\naudiences = ['api://privacy-gateway']\n")
        result = run_gateway("serve", "--config", str(config))
    assert result.returncode == 1 and f"port {port} " in one_line(result)
    assert not (tmp_path / "audit.sqlite").exists()  # nothing was started


@pytest.mark.parametrize(("busy", "option"), [(0, "--port"), (1, "--upstream-port"), (2, "--idp-port")])
def test_demo_names_the_busy_port_and_its_option_before_starting_anything(
    busy: int, option: str, tmp_path: Path
) -> None:
    with reserved_ports(3) as ports, taken_port() as taken:
        ports[busy] = taken
        result = run_gateway(*demo_args(ports, tmp_path / ".dev"), cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""  # no curl line
    line = one_line(result)
    assert f"port {taken} on 127.0.0.1" in line and "already in use" in line
    assert f"choose another with {option} PORT" in line and "--base-port PORT" in line
    assert not (tmp_path / ".dev").exists()  # checked before anything was started


def test_demo_base_port_moves_all_three() -> None:
    parser = stack_parser()
    assert stack.demo_ports(parser.parse_args(["demo", "--base-port", "9000"])) == stack.DemoPorts(9000, 9001, 9002)
    both = parser.parse_args(["demo", "--base-port", "9000", "--idp-port", "7000"])
    assert stack.demo_ports(both) == stack.DemoPorts(9000, 9001, 7000)
    assert stack.demo_ports(parser.parse_args(["demo"])) == stack.DemoPorts(8080, 8081, 8082)
    same = stack.DemoPorts(9000, 9000, 9002)
    assert stack.check_demo_ports(same) == (
        "gateway demo: --upstream-port and --port are both 9000; give the reference services another port"
    )
    assert "not a TCP port" in str(stack.check_demo_ports(stack.DemoPorts(70000, 9001, 9002)))
    # --base-port 0: a free port for each of the three (it used to give 0, 1 and 2: ports 1 and 2)
    free = stack.demo_ports(parser.parse_args(["demo", "--base-port", "0"]))
    assert all(port >= 1024 for port in (free.gateway, free.upstream, free.idp))
    assert len({free.gateway, free.upstream, free.idp}) == 3


def stack_parser() -> stack.argparse.ArgumentParser:
    parser = stack.argparse.ArgumentParser()
    stack.register(parser.add_subparsers(dest="command"))
    return parser


@contextmanager
def running_demo(ports: list[int], dev_dir: Path, cwd: Path) -> Iterator[list[str]]:
    """``gateway demo`` on ``ports`` until its "Press Ctrl-C" line; yields what it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *demo_args(ports, dev_dir)],
        cwd=cwd, env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + START_BOUND_SECONDS
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
        assert lines and lines[-1].startswith("Press Ctrl-C"), "\n".join(lines)
        yield lines
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(40) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            close_pipes(process)


def send(line: str, port: int) -> tuple[int, str]:
    """Send one printed curl line; (status, decision id)."""
    args = shlex.split(line)
    method, headers, body, url = "GET", {}, None, ""
    pairs = iter(range(1, len(args)))
    for i in pairs:
        if args[i] == "-X":
            method = args[i + 1]
            next(pairs)
        elif args[i] == "-H":
            name, _, value = args[i + 1].partition(": ")
            headers[name] = value
            next(pairs)
        elif args[i] == "--data":
            body = args[i + 1]
            next(pairs)
        elif not args[i].startswith("-"):
            url = args[i]
    prefix = f"http://127.0.0.1:{port}"
    assert url.startswith(prefix + "/"), url  # the port the demo bound
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, url[len(prefix) :], body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, response.headers.get("X-Decision-Id", "")
    finally:
        connection.close()


def test_demo_twice_in_a_row_and_a_second_demo_while_one_runs(tmp_path: Path) -> None:
    dev_dir = tmp_path / ".dev"
    with reserved_ports(3) as ports:
        for run in (1, 2):  # the second run reuses the key ring and the audit store in .dev
            with running_demo(ports, dev_dir, tmp_path) as lines:
                hint = next(line for line in lines if line.startswith("audit of the requests below: "))
                assert lines.index(hint) < min(i for i, line in enumerate(lines) if line.startswith("curl "))
                calls = [(lines[i - 1], line) for i, line in enumerate(lines) if line.startswith("curl ")]
                allowed = next(line for title, line in calls if title.endswith("expect allow"))
                denied = next(line for title, line in calls if title.endswith("expect deny"))
                status, allowed_id = send(allowed, ports[0])
                assert 200 <= status < 300, (run, status)
                status, denied_id = send(denied, ports[0])
                assert status == 403, (run, status)
                if run == 1:
                    # a second demo while this one runs: refused at once, naming the busy port
                    second = run_gateway(*demo_args(ports, dev_dir), cwd=tmp_path)
                    assert second.returncode == 1 and second.stdout == ""
                    assert f"port {ports[0]} on 127.0.0.1 for the gateway" in one_line(second)
                query = shlex.split(hint.removeprefix("audit of the requests below: "))
                assert query[1:4] == ["audit", "query", "--path"]
                # the hint, as printed, finds the requests just made (async audit: queryable within 1 s)
                shown, problem = "", ""
                for _ in range(50):  # bounded: a busy machine may take a moment to commit
                    done = subprocess.run([sys.executable, "-m", "gateway.cli", *query[1:]], cwd=tmp_path,
                                          env=clean_env(), capture_output=True, text=True, timeout=30)  # fmt: skip
                    shown, problem = done.stdout, done.stderr
                    if done.returncode == 0 and allowed_id in shown and denied_id in shown:
                        break
                    time.sleep(0.1)
                assert allowed_id and allowed_id in shown and denied_id in shown, (shown, problem)
    assert (dev_dir / "idp" / "keys.json").is_file() and (dev_dir / "audit.sqlite").is_file()
