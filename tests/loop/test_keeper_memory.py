"""The keeper's pool stays within its memory budget: least recently used workers go first."""

from __future__ import annotations

import os

from harness.optimize.keeper import Keeper
from harness.optimize.memory import available_bytes, rss_bytes


class _FakeWorker:
    def __init__(self) -> None:
        self.closed = False

        class _Proc:
            pid = os.getpid()

            @staticmethod
            def poll() -> None:
                return None

        self.proc = _Proc()

    def close(self) -> None:
        self.closed = True


def test_measures_this_process():
    assert 10 * 2**20 < rss_bytes(os.getpid()) < available_bytes() + rss_bytes(os.getpid())


def test_least_recently_used_workers_are_closed_to_fit(monkeypatch):
    keeper = Keeper({"memory_mb": 1000})
    workers = {slot: _FakeWorker() for slot in range(3)}
    keeper.workers = dict(workers)
    keeper.used = {0: 3.0, 1: 1.0, 2: 2.0}  # slot 1 is the least recently used
    mb = 2**20
    sizes = {0: (300 * mb, 0), 1: (300 * mb, 0), 2: (300 * mb, 0)}
    monkeypatch.setattr(
        Keeper, "memory", lambda self: {s: sizes[s] for s in self.workers if s in sizes}
    )
    keeper._make_room(3)  # 900 MB + one more of 300 MB > 1000 MB: the LRU one goes
    assert workers[1].closed and not workers[0].closed and not workers[2].closed
    assert set(keeper.workers) == {0, 2} and keeper.evicted == 1
    sizes.update({0: (400 * mb, 0), 2: (400 * mb, 0)})  # they grew: 800 + 400 > 1000
    keeper._make_room(3)
    assert workers[2].closed and not workers[0].closed and keeper.evicted == 2
    keeper._make_room(0)  # the slot being started does not count against itself
    assert set(keeper.workers) == {0}


def test_default_budget_is_half_the_available_memory():
    keeper = Keeper({"memory_mb": 0})
    assert abs(keeper.host_budget - available_bytes() // 2) < 512 * 2**20
