from __future__ import annotations

import pytest

from gateway.authz.engine import PolicyEngine
from tests.authz.support import load_engine


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return load_engine()
