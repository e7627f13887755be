"""Child process of the crash test: writes durable records and reports each one as record() returns.

Usage: python crash_writer.py STORE PRODUCERS. Each acknowledged decision id is written to stdout
with one ``os.write`` (atomic on a pipe), the moment ``record()`` returned: that is when the gateway
would release the response. The parent kills this process with SIGKILL mid-stream.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from gateway.audit.ids import uuid7
from gateway.audit.log import AuditLog
from gateway.audit.record import DecisionRecord
from gateway.audit.settings import AuditSettings


async def main(path: str, producers: int) -> None:
    log = AuditLog(AuditSettings(path=path, mode="durable", gateway_id="crash", batch_size=64))
    await log.start()
    os.write(1, b"ready\n")

    async def produce() -> None:
        while True:
            rec = DecisionRecord(decision_id=uuid7(), time=time.time(), method="GET", path="/crash",
                                 categories=("user.contact.email",), purpose="essential.service",
                                 decision="allow", status=200)
            await log.record(rec)
            os.write(1, (rec.decision_id + "\n").encode())

    await asyncio.gather(*(produce() for _ in range(producers)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
