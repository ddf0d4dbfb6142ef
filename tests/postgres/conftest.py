"""A running PostgreSQL for the team-scale tests, or a skip that says why there is none.

CI starts it before pytest (``tests/postgres/setup_pg.sh start``, in the background like the
SLURM cluster). Locally: run that script (as root it installs PostgreSQL with apt if needed),
or let the fixture start it when the binaries are there; it is stopped at the end only if the
fixture started it.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SETUP = HERE / "setup_pg.sh"
STATE = Path(os.environ.get("HARNESS_PG_STATE", "/tmp/harness-pg"))
PORT = int(os.environ.get("HARNESS_PG_PORT", "55432"))


def _answers() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(f"host=127.0.0.1 port={PORT} user=postgres dbname=postgres",
                             connect_timeout=3):  # fmt: skip
            return True
    except Exception:
        return False


class Postgres:
    def __init__(self, port: int) -> None:
        self.port = port

    def create_database(self, prefix: str = "t") -> str:
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[postgres]')")
    started = False
    if not _answers():
        proc = subprocess.run([str(SETUP), "start", "--no-install"], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        reason = (
            (STATE / "status").read_text().strip() if (STATE / "status").exists() else proc.stderr
        )
        if proc.returncode != 0 or not _answers():
            pytest.skip(
                f"no PostgreSQL ({reason}); start one with: {SETUP.relative_to(HERE.parents[1])} start"
            )
        started = True
    yield Postgres(PORT)
    if started:
        subprocess.run([str(SETUP), "stop"], capture_output=True, timeout=60)
