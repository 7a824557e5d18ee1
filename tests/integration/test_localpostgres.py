"""The project's own PostgreSQL: started from Debian's binaries, reachable by URL, keeps its data over a crash."""

from __future__ import annotations

import tempfile

import pytest
import sqlalchemy as sa

from ppo_alerts.localpostgres import LocalPostgres


@pytest.fixture
def server():
    pg = LocalPostgres(tempfile.mkdtemp(prefix="ppo-alerts-pg-test-"))
    yield pg
    pg.close()


def test_it_starts_keeps_a_committed_row_over_a_crash_and_restarts_on_the_same_port(server: LocalPostgres):
    url = server.start()
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE t (k TEXT PRIMARY KEY)"))
        c.execute(sa.text("INSERT INTO t VALUES ('kept')"))
    engine.dispose()
    server.kill()
    assert not server.is_running()
    assert server.start() == url
    engine = sa.create_engine(url)
    with engine.begin() as c:
        assert c.execute(sa.text("SELECT k FROM t")).scalars().all() == ["kept"]
    engine.dispose()
