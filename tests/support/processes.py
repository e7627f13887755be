"""Child processes of the tests."""

from __future__ import annotations

import subprocess
from typing import Any


def close_pipes(process: subprocess.Popen[Any]) -> None:
    """Close the pipes ``Popen`` opened for ``PIPE``, once the process is reaped: ``wait()`` leaves them
    to the garbage collector, which warns (``ResourceWarning: unclosed file``)."""
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
