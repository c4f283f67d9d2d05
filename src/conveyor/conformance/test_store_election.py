"""Store.elect / resign / leaders: one holder per role under a lease of the store's clock (issue 9, item 7)."""

from __future__ import annotations

import asyncio

from conveyor.conformance.helpers import eventually
from conveyor.store import Store

TTL = 30.0


async def test_the_first_candidate_takes_a_vacant_role(store: Store) -> None:
    assert await store.leaders() == []
    a = await store.elect("maintenance", "a", TTL)
    assert a.held and a.holder == "a" and a.name == "maintenance"
    assert TTL - 2 < a.expires_in <= TTL + 0.5
    (listed,) = await store.leaders()
    assert (listed.name, listed.holder, listed.term) == ("maintenance", "a", a.term)


async def test_another_candidate_is_refused_while_the_lease_runs(store: Store) -> None:
    a = await store.elect("maintenance", "a", TTL)
    b = await store.elect("maintenance", "b", TTL)
    assert not b.held
    assert (b.holder, b.term) == ("a", a.term)
    assert 0 < b.expires_in <= TTL + 0.5  # when it may be tried again


async def test_a_renewal_keeps_the_term_and_extends_the_lease(store: Store) -> None:
    first = await store.elect("maintenance", "a", 1.0)
    renewed = await store.elect("maintenance", "a", TTL)
    assert renewed.held and renewed.term == first.term
    assert renewed.expires_in > 5


async def test_roles_are_independent(store: Store) -> None:
    assert (await store.elect("maintenance", "a", TTL)).held
    assert (await store.elect("scheduler", "b", TTL)).held
    assert [(r.name, r.holder) for r in await store.leaders()] == [("maintenance", "a"), ("scheduler", "b")]


async def test_a_lapsed_lease_goes_to_the_next_candidate_with_a_new_term(store: Store) -> None:
    a = await store.elect("maintenance", "a", 0.3)

    async def b_takes_over() -> bool:
        return (await store.elect("maintenance", "b", TTL)).held

    await eventually(b_takes_over, timeout=5, what="b elected after a's lease lapsed")
    (role,) = await store.leaders()
    assert role.holder == "b" and role.term > a.term
    late = await store.elect("maintenance", "a", TTL)  # a comes back: refused, and sees who holds it
    assert not late.held and late.holder == "b"


async def test_a_holder_that_let_its_lease_lapse_gets_a_new_term(store: Store) -> None:
    first = await store.elect("maintenance", "a", 0.2)
    await asyncio.sleep(0.5)
    again = await store.elect("maintenance", "a", TTL)
    assert again.held and again.term > first.term  # not a renewal: it must restart what it ran


async def test_resign_frees_the_role_at_once_and_only_for_its_holder(store: Store) -> None:
    a = await store.elect("maintenance", "a", TTL)
    await store.resign("maintenance", "b")  # not b's to give up
    assert [r.holder for r in await store.leaders()] == ["a"]
    await store.resign("maintenance", "a")
    assert await store.leaders() == []
    b = await store.elect("maintenance", "b", TTL)
    assert b.held and b.term > a.term  # terms never repeat, even after a resignation


async def test_concurrent_candidates_elect_exactly_one(store: Store) -> None:
    results = await asyncio.gather(*(store.elect("maintenance", f"c{i}", TTL) for i in range(12)))
    holders = [r.holder for r in results if r.held]
    assert len(holders) == 1, holders
    assert {r.holder for r in results} == set(holders)
    assert len({r.term for r in results}) == 1
