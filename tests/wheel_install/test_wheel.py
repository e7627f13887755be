"""The built wheel is the whole gateway: it ships its policies and route maps and starts on its defaults.

Built from a copy of the checkout with pip, installed into a clean virtual environment (its runtime
dependencies from the package index pip is configured with), then run from there with no checkout
on any path: ``gateway serve`` with the dev IdP answers ``/readyz`` 200 on the policies and route maps
it finds inside the wheel.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from gateway.identity.devidp import create_app
from tests.wheel_install.build import ROOT, Installed, build_wheel, clean_env, install_into_clean_venv, source_files

# The bounds below (pip, start-up) only catch a hang; together they exceed the suite-wide 120 s timeout.
pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]

START_SECONDS = 60.0  # bound on the gateway's start (keys, policies, audit store), far above the ~2 s it takes
PORT_ATTEMPTS = 3  # a port the kernel handed out can be taken by another process before the gateway binds it


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_holds_every_module_policy_file_and_route_map_and_nothing_else(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [path.as_posix() for path in source_files()]
    modules = {name for name in sources if name.startswith("gateway/") and name.endswith(".py")}
    policies = {"gateway/_data/" + name for name in sources if name.startswith("policies/")}
    route_maps = {name for name in sources if name.startswith("gateway/adapters/") and name.endswith(".toml")}
    assert route_maps >= {"gateway/adapters/reference.toml", "gateway/adapters/gmail.toml"}
    assert modules - names == set(), "modules missing from the wheel (a sub-package setup.py does not find?)"
    assert policies - names == set(), "policy files missing from the wheel (a package-data pattern?)"
    assert route_maps - names == set()
    shipped_policies = {name for name in names if name.startswith("gateway/_data/")}
    assert shipped_policies == policies, "the wheel's policies are not the checkout's policies/"
    top_level = {name.split("/", 1)[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"gateway"}


def test_installed_wheel_serves_on_its_own_policies_and_has_no_top_level_adapters(
    wheel: Path, tmp_path: Path
) -> None:
    installed = install_into_clean_venv(wheel, tmp_path / "venv")
    work = tmp_path / "work"  # the current directory of everything below: no checkout in sight
    work.mkdir()

    no_adapters = run_python(installed, work, "import adapters")
    assert no_adapters.returncode == 1 and "No module named 'adapters'" in no_adapters.stderr, no_adapters.stderr

    where = run_python(installed, work, "import json; from gateway.authz.settings import PoliciesSettings as P; "
                                        "d = P(); print(json.dumps([d.dir, list(d.route_maps)]))")
    assert where.returncode == 0, where.stderr
    policies_dir, route_maps = json.loads(where.stdout)
    inside = installed.site_packages() / "gateway"
    assert Path(policies_dir) == inside / "_data" / "policies"
    assert [Path(p) for p in route_maps] == [inside / "adapters" / "reference.toml", inside / "adapters" / "gmail.toml"]
    assert not Path(policies_dir).is_relative_to(ROOT) and (Path(policies_dir) / "schema.cedarschema").is_file()

    for command in (["policy", "validate"], ["policy", "test", "--coverage", "--threshold", "95"]):
        done = subprocess.run([str(installed.gateway), *command], cwd=work, env=clean_env(), capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr  # the packs' own suites ship and pass too
    assert " 0 failed" in done.stdout and "cases" in done.stdout, done.stdout

    with dev_idp(tmp_path / "idp") as authority, served(installed, work, authority) as port:
        status, body = get(port, "/readyz")
        assert status == 200, body
        assert json.loads(body)["checks"] == {"keys": True, "policies": True, "audit": True}
        status, body = get(port, "/tenants/any/contacts")  # no token: the request path runs, and refuses
        assert status == 401, body
    assert (work / "var" / "audit.sqlite").is_file()  # the default audit.path, relative to the current directory


def run_python(installed: Installed, cwd: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(installed.python), "-c", code], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=60)


def get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@contextlib.contextmanager
def dev_idp(dev_dir: Path) -> Iterator[str]:
    """The dev IdP in this process on a socket the kernel bound, so its URL (its issuer) is known first."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    authority = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(dev_dir, authority=authority), log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the dev IdP did not start"
            time.sleep(0.01)
        yield authority
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def served(installed: Installed, cwd: Path, authority: str) -> Iterator[int]:
    """``gateway serve`` from the clean venv on its defaults but the dev IdP's authority; its port, once ready."""
    env = clean_env(GATEWAY_IDENTITY_AUTHORITY=authority)
    for _ in range(PORT_ATTEMPTS):
        port = kernel_port()
        log = cwd / f"serve-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([str(installed.gateway), "serve", "--port", str(port)], cwd=cwd, env=env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            if wait_ready(process, port):
                yield port
                return
            output = log.read_text(errors="replace")
            if "already in use" not in output:
                pytest.fail(f"gateway serve from the installed wheel did not become ready (exit {process.poll()}):\n"
                            f"{output[-3000:]}")
        finally:
            stop(process)
    pytest.fail(f"every one of {PORT_ATTEMPTS} ports the kernel handed out was taken before the gateway bound it")


def kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(process: subprocess.Popen[bytes], port: int) -> bool:
    """True once ``/readyz`` answers 200; False when the process exits first or the bound passes."""
    deadline = time.monotonic() + START_SECONDS
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if get(port, "/readyz")[0] == 200:
                return True
        time.sleep(0.1)
    return False


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
