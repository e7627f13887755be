"""Build the wheel from a copy of the checkout and install it into a clean virtual environment.

Everything goes through pip as a user would run it, with the package index pip is configured with
(``pip config list``); nothing here reaches for another index. A pip that cannot reach its index
fails the test with pip's own words, never a skip: a wheel that was not checked is not known to work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_SECONDS = 200.0  # a bound on a hung index, far above the ~10 s pip takes here
PIP_NETWORK = ("--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "30")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's virtual environment and ``GATEWAY_*`` settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "PYTHON")) and k not in ("VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    env.update(extra)
    return env


def run_pip(args: list[str], what: str, cwd: Path) -> None:
    command = [*args, *PIP_NETWORK]
    try:
        done = subprocess.run(command, cwd=cwd, env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=PIP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: pip did not finish within {PIP_TIMEOUT_SECONDS:.0f} s; is the package index it is "
                    "configured with reachable (pip config list)?")
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        pytest.fail(f"{what}: pip exited {done.returncode}. It resolves from the package index it is configured "
                    f"with (pip config list); if that index is unreachable, this test cannot pass.\n{tail}")


def source_files() -> list[Path]:
    """The checkout's files as a fresh clone has them (tracked, plus new files not ignored)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"the packaging test builds from the files git lists in {ROOT}, and git could not list them: {exc}")
    names = [name for name in listed.decode().split("\0") if name]
    return [Path(name) for name in names if (ROOT / name).is_file()]  # a deleted, not yet staged file is gone


def copy_checkout(target: Path) -> Path:
    """A copy of the checkout to build from, so the build writes nothing (build/, *.egg-info) into it."""
    for relative in source_files():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, destination)
    return target


def build_wheel(work: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the checkout, with build isolation (as ``pip install .`` does)."""
    source = copy_checkout(work / "source")
    out = work / "wheelhouse"
    run_pip([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(source)],
            "building the wheel", cwd=work)
    wheels = sorted(out.glob("privacy_gateway-*.whl"))
    assert len(wheels) == 1, f"expected one wheel, pip wrote {[w.name for w in out.iterdir()]}"
    return wheels[0]


@dataclass(frozen=True)
class Installed:
    """A virtual environment holding the wheel and its runtime dependencies, and nothing of the checkout."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def gateway(self) -> Path:
        return self.root / "bin" / "gateway"

    def site_packages(self) -> Path:
        found = sorted(self.root.glob("lib/python3*/site-packages"))
        assert len(found) == 1, found
        return found[0]


def install_into_clean_venv(wheel: Path, target: Path) -> Installed:
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    installed = Installed(target)
    run_pip([str(installed.python), "-m", "pip", "install", str(wheel)],
            "installing the wheel and its runtime dependencies", cwd=target.parent)
    return installed
