"""Exactly ``n_trials`` trials across any number of concurrent tune workers, none lost.

A worker that finds the study full but trials still running waits for them: a running trial
may be a killed worker's, failed after the grace period, and its slot is then re-run.

Workers claim trials under a lock shared through the storage: a PostgreSQL advisory lock for
``postgresql…`` URLs, an exclusive file lock beside a sqlite database. Under the lock a worker
first fails stale trials (a killed worker's trial stops sending heartbeats and is marked FAIL
after ``grace_s``), then counts the trials that are finished (COMPLETE, PRUNED) or running and
asks for a new one only while that count is below the total. A failed trial does not count,
so another worker re-runs its slot. While a trial runs its worker records a heartbeat every
``heartbeat_s`` seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.core.fsio import locked

COUNTED = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")
HEARTBEAT_S = 2
GRACE_S = 10


def storage(url: str) -> Any:
    """An RDBStorage with heartbeats (so a killed worker's trial is failed, not left RUNNING).

    Created under the shared lock: workers starting together on an empty PostgreSQL database
    would otherwise race to create Optuna's schema (a duplicate-type IntegrityError).
    """
    import warnings

    import optuna

    with claim_lock(url, "optuna-schema"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat_interval is flagged experimental
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)


@contextlib.contextmanager
def claim_lock(url: str, study: str) -> Iterator[None]:
    """The workers' shared lock for claiming trials (module doc)."""
    if url.startswith("postgresql"):
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(study.encode()).digest()[:8], "big", signed=True)
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        engine.dispose()
    elif url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///").split("?", 1)[0] + ".claims.lock")
        with locked(path, timeout_s=600):
            yield
    else:  # another RDB: no cross-process lock available here
        yield


def counted(study: Any) -> int:
    return sum(t.state.name in COUNTED for t in study.get_trials(deepcopy=False))


@contextlib.contextmanager
def heartbeat(store: Any, trial_id: int) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):
                store.record_heartbeat(trial_id)

    store.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=HEARTBEAT_S + 1)


def run_trials(
    study: Any,
    url: str,
    total: int,
    objective: Callable[[Any], float],
    on_start: Callable[[], None],
) -> int:
    """Claim and run trials until the study holds ``total``; returns how many this worker ran."""
    import time

    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    ran, started = 0, False
    while True:
        with claim_lock(url, study.study_name):
            fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            running = sum(t.state.name in ("RUNNING", "WAITING") for t in trials)
            failed = sum(t.state == TrialState.FAIL for t in trials)
            full = counted(study) >= total
            if full and not running:
                return ran
            if failed > total:  # something fails every time: stop rather than loop forever
                return ran
            trial = None if full else study.ask()
            if trial is not None:  # beating from the start: a trial without one never goes stale
                study._storage.record_heartbeat(trial._trial_id)
        # no slot: wait, a running trial may still fail (a killed worker's) and free one
        if trial is None:
            time.sleep(HEARTBEAT_S)
            continue
        with heartbeat(study._storage, trial._trial_id):
            if not started:  # inside the heartbeat: a worker killed here still frees its slot
                on_start()
                started = True
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
            except Exception:
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, value)
        ran += 1
