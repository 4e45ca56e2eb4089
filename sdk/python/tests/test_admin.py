"""Platform administration (platform admin key): orgs, quotas, org keys, runners, join tokens, audit."""

from __future__ import annotations

import uuid

import pytest

import boxyard
from conftest import Org, Stack


def test_orgs_quotas_and_org_keys(platform: boxyard.Client, org: Org) -> None:
    assert org.id in [o.id for o in platform.admin.list_orgs()]
    o = platform.admin.get_org(org.id)
    assert o.name == org.name and o.quota.max_boxes > 0
    q = boxyard.Quota(
        max_boxes=o.quota.max_boxes + 1,
        max_vcpus=o.quota.max_vcpus,
        max_memory_mib=o.quota.max_memory_mib,
        max_box_vcpus=o.quota.max_box_vcpus,
        max_box_memory_mib=o.quota.max_box_memory_mib,
        max_box_disk_mib=o.quota.max_box_disk_mib,
    )
    try:
        assert platform.admin.set_quota(org.id, q).quota == q
    finally:
        platform.admin.set_quota(org.id, o.quota)
    k = platform.admin.create_org_key(org.id, "pysdk-admin-made")
    assert k.secret and k.role == "member"
    assert k.id in [x.id for x in platform.admin.list_org_keys(org.id)]
    assert platform.admin.revoke_org_key(org.id, k.id).revoked_at is not None

    name = f"pysdk-tmp-{uuid.uuid4().hex[:8]}"
    tmp = platform.admin.create_org(name, quota=q)
    assert tmp.quota == q
    with pytest.raises(boxyard.ConflictError) as e:
        platform.admin.create_org(name)
    assert e.value.code == "already_exists"
    platform.admin.delete_org(tmp.id)
    with pytest.raises(boxyard.NotFoundError):
        platform.admin.get_org(tmp.id)
    entries = platform.admin.audit_log(limit=200)
    actions = {(e.action, e.target) for e in entries}
    assert any(a == "org.create" for a, _ in actions) and any(a == "quota.set" for a, _ in actions)
    assert entries == sorted(entries, key=lambda e: e.id, reverse=True)


def test_runners_cordon_drain_and_join_tokens(platform: boxyard.Client, box: boxyard.Box) -> None:
    runners = platform.admin.list_runners()
    assert runners and box.runner_id in [r.id for r in runners]
    r = platform.admin.get_runner(box.runner_id or "")
    assert r.state == "ready" and r.capacity_vcpus >= 1 and r.backend
    try:
        assert platform.admin.cordon_runner(r.id).cordoned
        d = platform.admin.drain_runner(r.id)
        assert d.cordoned and d.draining
    finally:
        u = platform.admin.uncordon_runner(r.id)
    assert not u.cordoned and not u.draining
    # The runner still has boxes (the shared one): removing it is refused, with the API's code.
    with pytest.raises(boxyard.ConflictError) as e:
        platform.admin.delete_runner(r.id)
    assert e.value.code == "runner_in_use"

    t = platform.admin.create_join_token(description="pysdk test", ttl_seconds=600)
    assert t.secret and t.secret.startswith("byj_") and t.description == "pysdk test"
    assert t.id in [x.id for x in platform.admin.list_join_tokens()]
    assert platform.admin.revoke_join_token(t.id).revoked_at is not None


async def test_async_admin(stack: Stack, org: Org, box: boxyard.Box) -> None:
    async with boxyard.AsyncClient(stack.url, stack.platform_key) as p:
        assert org.id in [o.id for o in await p.admin.list_orgs()]
        o = await p.admin.get_org(org.id)
        assert (await p.admin.set_quota(org.id, o.quota)).quota == o.quota
        k = await p.admin.create_org_key(org.id, "apysdk", role="admin")
        assert k.id in [x.id for x in await p.admin.list_org_keys(org.id)]
        assert (await p.admin.revoke_org_key(org.id, k.id)).revoked_at is not None
        tmp = await p.admin.create_org(f"apysdk-{uuid.uuid4().hex[:8]}")
        await p.admin.delete_org(tmp.id)
        r = await p.admin.get_runner(box.runner_id or "")
        assert r.id in [x.id for x in await p.admin.list_runners()]
        try:
            assert (await p.admin.cordon_runner(r.id)).cordoned
            assert (await p.admin.drain_runner(r.id)).draining
        finally:
            assert not (await p.admin.uncordon_runner(r.id)).cordoned
        with pytest.raises(boxyard.ConflictError):
            await p.admin.delete_runner(r.id)
        t = await p.admin.create_join_token()
        assert t.id in [x.id for x in await p.admin.list_join_tokens()]
        assert (await p.admin.revoke_join_token(t.id)).revoked_at is not None
        assert len(await p.admin.audit_log(limit=5)) == 5
        assert (await p.request("GET", "/v1/me"))["role"] == "platform_admin"
