"""The profile summary, the flame graph and the soak slope, on hand-made samples."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from load.measure.profile import OTHER_STEP, OTHER_THREADS_STEP, flame_svg, parse_collapsed, step_of, steps, summarize
from load.measure.soak import slope_per_minute, steady_part

RUN = "run (uvicorn/server.py:60);handle (gateway/app.py:100)"
COLLAPSED = (
    f"{RUN};authenticate (gateway/identity/authenticator.py:80) 30\n"
    f"{RUN};authorize (gateway/authz/authorizer.py:50);is_authorized (cedarpy/__init__.py:10) 50\n"
    f"{RUN} 20\n"
    "malformed line without count\n"
)


def test_summary_ranks_self_and_total_time() -> None:
    stacks = parse_collapsed(COLLAPSED)
    assert len(stacks) == 3
    text = summarize(stacks, top_n=5)
    assert text.startswith("100 samples")
    self_part = text.split("Top 5 by self time")[1].split("Top 5 by total time")[0]
    assert self_part.strip().splitlines()[1].strip() == "50.0%  is_authorized (cedarpy/__init__.py:10)"
    total_part = text.split("Top 5 by total time")[1]
    assert "100.0%  handle (gateway/app.py:100)" in total_part
    assert "30.0%  gateway/identity/authenticator.py" in text.split("Self time by file:")[1]


PATH = "thread (1): MainThread;Runner.run (asyncio/runners.py:86);Gateway._process (gateway/app.py:136)"
STEPS_COLLAPSED = (
    # the signature inside the upstream headers counts for the signature only
    f"{PATH};Gateway._upstream_headers (gateway/app.py:282);Gateway.identity_headers (gateway/app.py:266);"
    "AssertionSigner.sign_request (gateway/assertion.py:204);_compact (gateway/assertion.py:237) 30\n"
    f"{PATH};Gateway._upstream_headers (gateway/app.py:282) 10\n"
    f"{PATH};UpstreamClient.open (gateway/proxy.py:132);ClientSession._request (aiohttp/client.py:558) 40\n"
    f"{PATH} 10\n"
    "thread (2): audit-writer;Thread.run (threading.py:971);Writer.run (gateway/audit/writer.py:54);"
    "Store.write (gateway/audit/store.py:199) 5\n"
    "thread (2): audit-writer;Thread.run (threading.py:971);Writer.run (gateway/audit/writer.py:54);"
    "Condition.wait (threading.py:295) 50\n"
    "thread (1): MainThread;Runner.run (asyncio/runners.py:86) 5\n"
)


def test_steps_count_each_sample_once_for_its_innermost_step_and_leave_waits_out() -> None:
    stacks = parse_collapsed(STEPS_COLLAPSED)
    assert step_of(stacks[0][0]) == "X-Gateway-Assertion (Ed25519 JWS)"
    assert step_of(stacks[-1][0]) == OTHER_STEP
    table = steps(stacks, cpu_us_per_request=200.0)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    # 100 samples of work (the 50 of the writer waiting are left out): 30% of 200 us is 60 us
    assert rows["X-Gateway-Assertion (Ed25519 JWS)"] == "| X-Gateway-Assertion (Ed25519 JWS) | 30.0% | 60 |"
    assert rows["upstream headers"].endswith("| 10.0% | 20 |")
    assert rows["upstream call and answer (aiohttp)"].endswith("| 40.0% | 80 |")
    assert rows["request path, rest (gateway/app.py)"].endswith("| 10.0% | 20 |")
    assert rows[OTHER_THREADS_STEP].endswith("| 5.0% | 10 |")
    assert rows[OTHER_STEP].endswith("| 5.0% | 10 |")
    assert "33.3% of the samples were threads waiting" in table
    assert "CPU us" not in steps(stacks)  # without a CPU figure, shares only


def test_flame_graph_is_valid_svg_with_one_box_per_frame() -> None:
    svg = flame_svg(parse_collapsed(COLLAPSED), "title <&>")
    root = ET.fromstring(svg)
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert "handle (gateway/app.py:100) (100.0%)" in titles
    assert "is_authorized (cedarpy/__init__.py:10) (50.0%)" in titles
    assert len(titles) == 5
    assert "{y" not in svg


def test_soak_slope_in_mb_per_minute() -> None:
    growing = [(float(t), 40.0 + t / 60) for t in range(0, 300, 5)]  # +1 MB per minute
    assert slope_per_minute(growing) == pytest.approx(1.0)
    flat = [(float(t), 40.0) for t in range(0, 300, 5)]
    assert slope_per_minute(flat) == 0.0
    assert slope_per_minute([(0.0, 1.0)]) == 0.0


def test_steady_part_is_the_second_half() -> None:
    samples = [(float(t), 1.0) for t in range(5, 105, 5)]
    steady = steady_part(samples)
    assert steady[0][0] == 50.0
    assert steady[-1][0] == 100.0
    # A cache filling early then a plateau is flat; growth that goes on is not.
    filling = [(float(t), min(40.0 + t, 100.0)) for t in range(5, 305, 5)]
    assert abs(slope_per_minute(steady_part(filling))) < 0.01
    leaking = [(float(t), 40.0 + t / 10) for t in range(5, 305, 5)]
    assert slope_per_minute(steady_part(leaking)) == pytest.approx(6.0)
