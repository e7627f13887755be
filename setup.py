"""The one part of the build that pyproject.toml cannot declare: the policies as package data.

The checkout's top-level ``policies/`` stays the source of truth (users edit it in place, the tests
and ``make demo`` read it there). The wheel carries it as ``gateway/_data/policies`` through
setuptools' ``package_dir`` mapping, so the sdist and the wheel hold the same files with no copy
step and no second copy under ``gateway/`` in the checkout. Setuptools wants every folder that
holds data listed as a package; they are found here, so a new pack needs no edit (a folder whose
name is not an identifier would be left out: tests/wheel_install/ checks that every file lands).
Everything else (metadata, dependencies, the data patterns) is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

POLICIES = "gateway._data.policies"

setup(
    packages=[
        *find_namespace_packages(include=["gateway", "gateway.*"], exclude=["*.__pycache__"]),
        POLICIES,
        *(f"{POLICIES}.{name}" for name in find_namespace_packages(where="policies", exclude=["*.__pycache__"])),
    ],
    package_dir={POLICIES: "policies"},
)
