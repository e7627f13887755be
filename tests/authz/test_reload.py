"""Hot reload: a good change is picked up (by the watcher or on demand), a broken one keeps the last
good set and shows in ``last_error``; caches are dropped with the old set."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from gateway.authz.authorizer import Authorizer
from gateway.authz.settings import AuthzSettings
from tests.authz.support import POLICIES, ROUTE_MAPS, A, user
from tests.support.poll import wait_until_async

SUPPORT = "essential.service.operations.support"
EXTRA = """
@id("extra-forbid-contacts")
@source("test, reload")
@clause("No contact reads at all.")
forbid (principal, action == Action::"read", resource is Contact);
"""


def copy_policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def touch_later(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = time.time() + 5  # mtime resolution differs between file systems: move it clearly
    os.utime(path, (stamp, stamp))


async def decide(authz: Authorizer) -> tuple[bool, tuple[str, ...]]:
    match = authz.match("GET", f"/tenants/{A}/contacts/ct-a-001")
    assert match is not None
    facts_free = await authz.authorize(
        user("Support.Agent"),
        match,
        purpose=SUPPORT,
        recipient=None,
        consent_ref=None,
        body=None,
        now=time.time(),
    )
    return facts_free.allowed, facts_free.policy_ids


async def test_reload_swaps_good_sets_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    from gateway.demo.upstream import create_upstream_app
    from tests.support.servers import serve

    policies = copy_policies(tmp_path)
    with serve(create_upstream_app()) as upstream:
        authz = Authorizer.load(AuthzSettings(policies, ROUTE_MAPS, upstream.url, watch=False))
        await authz.start()
        try:
            assert await decide(authz) == (True, ("support-agent-reads",))
            first_hash = authz.policy_hash
            assert authz.reload_if_changed() is None  # nothing changed

            touch_later(policies / "extra.cedar", EXTRA)
            assert authz.reload_if_changed() is True
            assert authz.policy_hash != first_hash and authz.last_error is None
            assert await decide(authz) == (False, ("extra-forbid-contacts",))  # no stale cached allow

            good_hash = authz.policy_hash
            touch_later(policies / "extra.cedar", EXTRA + "\npermit (principal, action, resource) when { 1 + };\n")
            assert authz.reload() is False
            assert authz.policy_hash == good_hash and authz.ready
            assert authz.last_error is not None and "extra.cedar:" in authz.last_error
            assert await decide(authz) == (False, ("extra-forbid-contacts",))

            (policies / "extra.cedar").unlink()
            assert authz.reload() is True and authz.last_error is None
            assert await decide(authz) == (True, ("support-agent-reads",))
        finally:
            await authz.close()


async def test_the_watcher_picks_up_changes(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path)
    authz = Authorizer.load(
        AuthzSettings(policies, ROUTE_MAPS, "http://127.0.0.1:9", watch=True, watch_interval_seconds=0.05)
    )
    await authz.start()
    try:
        first_hash = authz.policy_hash
        touch_later(policies / "base" / "broken.cedar", "permit (")
        await wait_until_async(lambda: authz.last_error, timeout=5, message="the broken file to be noticed")
        assert authz.last_error is not None and "broken.cedar" in authz.last_error
        assert authz.policy_hash == first_hash
        touch_later(policies / "base" / "broken.cedar", EXTRA)
        await wait_until_async(lambda: authz.policy_hash != first_hash, timeout=5, message="the fixed set to load")
        assert authz.policy_hash != first_hash and authz.last_error is None
    finally:
        await authz.close()


def test_reloads_from_the_file_watch_and_sighup_at_once_run_one_at_a_time(tmp_path: Path) -> None:
    """The watcher thread and SIGHUP's thread may both reload: each load runs alone, none is lost."""
    import threading

    policies = copy_policies(tmp_path)
    authz = Authorizer.load(AuthzSettings(policies, ROUTE_MAPS, "http://127.0.0.1:9", watch=False))
    load = authz._load_engine
    inside, most = 0, 0
    guard = threading.Lock()

    def counted(settings: AuthzSettings) -> object:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        try:
            time.sleep(0.05)  # long enough for another caller to arrive while this one loads
            return load(settings)
        finally:
            with guard:
                inside -= 1

    authz._load_engine = counted  # type: ignore[method-assign,assignment]
    start = threading.Barrier(4)

    def reload() -> None:
        start.wait(timeout=10)
        authz.reload()

    threads = [threading.Thread(target=reload) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert most == 1, f"{most} policy loads ran at once"
    assert authz.reloads == 4 and authz.last_error is None
