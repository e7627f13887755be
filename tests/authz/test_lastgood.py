"""The last good policy set on disk: a process that starts while a policy file is broken enforces the
last set that loaded (and says so), and picks up the fix when it comes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.authz import lastgood
from gateway.authz.authorizer import Authorizer
from gateway.authz.errors import PolicyError
from gateway.authz.settings import AuthzSettings
from gateway.demo.upstream import create_upstream_app
from tests.authz.support import ROUTE_MAPS
from tests.authz.test_reload import EXTRA, copy_policies, decide, touch_later
from tests.support.servers import serve


def settings(policies: Path, resolver_url: str = "http://127.0.0.1:9") -> AuthzSettings:
    return AuthzSettings(policies_dir=policies, route_maps=ROUTE_MAPS, resolver_url=resolver_url, watch=False)


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve(create_upstream_app()) as upstream:
        yield upstream.url


async def test_a_broken_start_serves_the_last_good_set_until_fixed(tmp_path: Path, upstream_url: str) -> None:
    policies = copy_policies(tmp_path)
    keep = tmp_path / "last-good"
    first = Authorizer.load_or_last_good(settings(policies, upstream_url), keep)
    assert first.last_error is None
    saved = lastgood.current(keep)
    assert saved is not None and (saved.policies_dir / "schema.cedarschema").is_file()
    await first.start()
    try:
        expected = await decide(first)
    finally:
        await first.close()
    assert expected == (True, ("support-agent-reads",))

    roles = policies / "base" / "roles.cedar"
    good_text = roles.read_text()
    touch_later(roles, good_text + "\npermit (principal, action, resource) when { ;\n")
    with pytest.raises(PolicyError):
        Authorizer.load(settings(policies))
    second = Authorizer.load_or_last_good(settings(policies, upstream_url), keep)
    assert second.last_error and "roles.cedar" in second.last_error
    assert second.policy_hash == first.policy_hash
    await second.start()
    try:
        assert await decide(second) == expected  # the same decisions as before the break

        touch_later(roles, good_text + EXTRA)  # fixed, with a change: the watched live files reload
        assert second.reload_if_changed() is True
        assert second.last_error is None
        assert await decide(second) == (False, ("extra-forbid-contacts",))
    finally:
        await second.close()
    assert lastgood.current(keep) != saved


def test_no_last_good_set_means_the_error_stands(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path)
    (policies / "schema.cedarschema").write_text("entity {")
    with pytest.raises(PolicyError):
        Authorizer.load_or_last_good(settings(policies), tmp_path / "empty")
