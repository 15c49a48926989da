"""The rate-budget part of the `CheckpointStore` contract (`grant_tokens`, `cut_rate`), run
against every implementation, each through TWO store instances on one database, as two
processes would use it (the memory store, one process by nature, is used twice).

Everything is real: the memory store, two SQLite stores on one file (two writer threads taking
turns on the file's write lock) and two PostgreSQL stores on one throwaway database. Time is the
store's: a `ManualClock` moved by the test for memory and SQLite, and PostgreSQL's own clock,
which only real time moves. Bounds are then checked against time as measured around the calls,
so they hold whatever the server's clock read inside them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import pytest
import trio

from nexusd.stores import rate_budgets
from nexusd.stores.memory import MemoryCheckpointStore
from nexusd.stores.postgres import open_postgres_store
from nexusd.stores.sqlite import open_sqlite_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from nexusd.core.clock import ManualClock
    from nexusd.stores.checkpoints import CheckpointStore


@attrs.define
class Budgets:
    """Two store instances on one database, and how time passes for them. `first` calls
    itself "a", `second` calls itself "b", as two processes' host names."""

    first: CheckpointStore
    second: CheckpointStore
    #: the stores' clock, or None for PostgreSQL's own (real time)
    manual: ManualClock | None

    async def advance(self, seconds: float) -> None:
        if self.manual is None:
            await trio.sleep(seconds)  # the server's clock moves with real time only
        else:
            self.manual.advance(seconds)

    def now(self) -> float:
        return trio.current_time() if self.manual is None else self.manual.now().timestamp()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def budgets(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Budgets]:
    if request.param == "memory":
        store = MemoryCheckpointStore(clock=clock)
        yield Budgets(first=store, second=store, manual=clock)
    elif request.param == "sqlite":
        path = tmp_path / "checkpoints.db"
        async with (
            open_sqlite_store(path=path, clock=clock) as first,
            open_sqlite_store(path=path, clock=clock) as second,
        ):
            yield Budgets(first=first, second=second, manual=clock)
    else:
        dsn: str = request.getfixturevalue("postgres_dsn")
        async with (
            open_postgres_store(dsn=dsn, clock=clock, min_size=1, migrate=True) as first,
            open_postgres_store(dsn=dsn, clock=clock, min_size=1, migrate=True) as second,
        ):
            yield Budgets(first=first, second=second, manual=None)


async def test_a_new_budget_starts_full_and_grants_no_more_than_it_holds(
    budgets: Budgets,
) -> None:
    # a rate so low that the refill during the test rounds down to nothing
    limits = {"shard": "dev", "burst": 5, "ceiling": 0.001, "increase": 0.0}
    first = await budgets.first.grant_tokens(caller="a", wanted=3, **limits)
    assert first.granted == 3
    assert first.tokens == pytest.approx(2, abs=0.01)
    assert first.rate == pytest.approx(0.001)
    assert (await budgets.second.grant_tokens(caller="b", wanted=10, **limits)).granted == 2
    assert (await budgets.first.grant_tokens(caller="a", wanted=10, **limits)).granted == 0
    assert (await budgets.second.grant_tokens(caller="b", wanted=0, **limits)).granted == 0


async def test_concurrent_grants_never_exceed_burst_plus_rate_times_elapsed(
    budgets: Budgets,
) -> None:
    """Six callers on two stores, each asking for 2 tokens per round, 50 ms between rounds:
    together they get the burst plus what the rate refilled, never more."""
    limits = {"shard": "dev", "burst": 5, "ceiling": 20.0, "increase": 0.0}
    granted: list[int] = []

    async def ask(store: CheckpointStore, caller: str) -> None:
        granted.append((await store.grant_tokens(caller=caller, wanted=2, **limits)).granted)

    rounds, gap = 10, 0.05
    start = budgets.now()
    for _ in range(rounds):
        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(ask, (budgets.first, budgets.second)[n % 2], f"caller-{n}")
        await budgets.advance(gap)
    elapsed = budgets.now() - start
    total = sum(granted)
    assert total <= 5 + 20.0 * elapsed + 1e-6
    # demand beat supply every round: the refill between the first and last round was taken
    assert total >= 5 + 20.0 * gap * (rounds - 1) - 1


async def test_a_cut_is_shared_and_empties_the_bucket(budgets: Budgets) -> None:
    limits = {"shard": "dev", "burst": 10, "ceiling": 1.0}
    await budgets.first.grant_tokens(caller="a", wanted=0, increase=0.0, **limits)
    cut = await budgets.first.cut_rate(caller="a", decrease=0.5, floor=0.3, **limits)
    assert (cut.granted, cut.rate, cut.tokens) == (0, pytest.approx(0.5), 0.0)
    seen = await budgets.second.grant_tokens(caller="b", wanted=5, increase=0.0, **limits)
    assert seen.granted == 0
    assert seen.rate == pytest.approx(0.5)
    again = await budgets.second.cut_rate(caller="b", decrease=0.5, floor=0.3, **limits)
    assert again.rate == pytest.approx(0.3)  # 0.25 would be below the floor


async def test_successes_regain_rate_additively_up_to_the_ceiling(budgets: Budgets) -> None:
    limits = {"shard": "dev", "burst": 10, "ceiling": 10.0}
    cut = await budgets.first.cut_rate(caller="a", decrease=0.5, floor=0.5, **limits)
    assert cut.rate == pytest.approx(5)
    # each success adds increase / rate: 2 x 5 / 5
    regained = await budgets.second.grant_tokens(
        caller="b", wanted=0, increase=5.0, successes=2, **limits
    )
    assert regained.rate == pytest.approx(7)
    capped = await budgets.first.grant_tokens(
        caller="a", wanted=0, increase=5.0, successes=1000, **limits
    )
    assert capped.rate == pytest.approx(10)


async def test_the_smallest_recent_ceiling_wins(
    budgets: Budgets, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rate_budgets, "CEILING_HOLD", 0.3)
    common = {"shard": "dev", "burst": 10, "wanted": 0, "increase": 5.0}
    assert (await budgets.first.grant_tokens(caller="a", ceiling=10.0, **common)).rate == 10
    assert (await budgets.second.grant_tokens(caller="b", ceiling=4.0, **common)).rate == 4
    held = await budgets.first.grant_tokens(caller="a", ceiling=10.0, successes=1000, **common)
    assert held.rate == 4  # the lower ceiling was asked for less than CEILING_HOLD ago
    await budgets.advance(0.35)
    released = await budgets.first.grant_tokens(caller="a", ceiling=10.0, successes=1000, **common)
    assert released.rate == 10


async def test_a_caller_replaces_its_own_ceiling_at_once(budgets: Budgets) -> None:
    """A process restarted with a higher rate under the same host name is not held back by
    the lower one it had before; another caller still is."""
    common = {"shard": "dev", "burst": 10, "wanted": 0, "increase": 0.0}
    assert (await budgets.first.grant_tokens(caller="a", ceiling=1.0, **common)).rate == 1
    held = await budgets.second.grant_tokens(caller="b", ceiling=50.0, **common)
    assert held.rate == 1
    raised = await budgets.second.grant_tokens(caller="a", ceiling=50.0, **common)
    assert raised.rate == 50


async def test_the_rate_moves_with_its_ceiling(
    budgets: Budgets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cut is kept relative to the ceiling: at half of 10, a ceiling of 4 means 2."""
    monkeypatch.setattr(rate_budgets, "CEILING_HOLD", 0.3)
    common = {"shard": "dev", "burst": 10}
    cut = await budgets.first.cut_rate(caller="a", ceiling=10.0, decrease=0.5, floor=0.1, **common)
    assert cut.rate == pytest.approx(5)
    lowered = await budgets.second.grant_tokens(
        caller="b", wanted=0, ceiling=4.0, increase=0.0, **common
    )
    assert lowered.rate == pytest.approx(2)
    await budgets.advance(0.35)
    raised = await budgets.first.grant_tokens(
        caller="a", wanted=0, ceiling=10.0, increase=0.0, **common
    )
    assert raised.rate == pytest.approx(5)


async def test_the_refill_is_capped_by_the_burst(budgets: Budgets) -> None:
    limits = {"shard": "dev", "burst": 5, "ceiling": 1000.0, "increase": 0.0}
    assert (await budgets.first.grant_tokens(caller="a", wanted=5, **limits)).granted == 5
    await budgets.advance(0.05)  # 50 tokens' worth at 1000/s
    assert (await budgets.second.grant_tokens(caller="b", wanted=100, **limits)).granted == 5


async def test_every_shard_has_a_budget_of_its_own(budgets: Budgets) -> None:
    limits = {"burst": 3, "ceiling": 0.001}
    await budgets.first.cut_rate(caller="a", shard="east", decrease=0.5, floor=0.0001, **limits)
    west = await budgets.second.grant_tokens(
        caller="b", shard="west", wanted=3, increase=0.0, **limits
    )
    assert west.granted == 3
    assert west.rate == pytest.approx(0.001)


async def test_nonsense_is_refused(budgets: Budgets) -> None:
    store = budgets.first
    good = {"shard": "dev", "burst": 1, "ceiling": 1.0, "caller": "a"}
    with pytest.raises(ValueError, match="negative"):
        await store.grant_tokens(wanted=-1, increase=0.0, **good)
    with pytest.raises(ValueError, match="burst"):
        await store.grant_tokens(
            shard="dev", wanted=1, burst=0, ceiling=1.0, caller="a", increase=0.0
        )
    with pytest.raises(ValueError, match="ceiling"):
        await store.cut_rate(shard="dev", burst=1, ceiling=0.0, caller="a", decrease=0.5, floor=0.1)
    with pytest.raises(ValueError, match="decrease"):
        await store.cut_rate(decrease=1.0, floor=0.1, **good)
