"""Micro-benchmarks of the hot path (pytest-benchmark): ``make bench`` runs
``pytest --benchmark-enable --benchmark-only load/bench``. They are outside ``tests/`` so the normal
test run never times anything; each file benchmarks one component with real inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
