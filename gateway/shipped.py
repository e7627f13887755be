"""Where the policies and route maps that ship with the gateway are, in a checkout and in a wheel.

A source checkout keeps the policies in its top-level ``policies/`` folder: the source of truth, which
users edit in place and which ``make demo``, the tests and ``gateway serve`` read there. An installed
wheel has no checkout around it, so the build maps that folder into the package as
``gateway/_data/policies`` (setup.py, setuptools' ``package_dir``): standard package data, the same
files in the sdist and the wheel, and no second copy under ``gateway/`` in a checkout. The folder that
exists wins, the installed one first: in a checkout it never exists, and in site-packages the folder
beside the package is no checkout's.

The route maps need no mapping: they live in ``gateway/adapters/``, ordinary package data, found the
same way in both.

Trade-off: an installed gateway's policies sit in site-packages, replaced by every upgrade; a
deployment that changes them copies the folder out and points ``policies.dir`` at its copy.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED_POLICIES_DIR = PACKAGE_DIR / "_data" / "policies"
CHECKOUT_POLICIES_DIR = PACKAGE_DIR.parent / "policies"
ROUTE_MAPS_DIR = PACKAGE_DIR / "adapters"
ROUTE_MAPS = ("reference.toml", "gmail.toml")  # the reference services' and the Gmail API's


def policies_dir() -> Path:
    """The shipped policies: the wheel's copy when installed, else the checkout's ``policies/``."""
    return INSTALLED_POLICIES_DIR if INSTALLED_POLICIES_DIR.is_dir() else CHECKOUT_POLICIES_DIR


def route_maps() -> tuple[Path, ...]:
    """The shipped route maps, in the order the default configuration lists them."""
    return tuple(ROUTE_MAPS_DIR / name for name in ROUTE_MAPS)
