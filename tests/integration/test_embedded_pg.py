"""The embedded default (DESIGN.md §1): a CP started with no pg_host runs its own PostgreSQL
under <prefix>/pg and stops it when it stops."""
import os
import signal

import pytest

from harness.procs import processes_under

pytestmark = pytest.mark.asan


def test_cp_without_pg_host_runs_and_stops_its_own_postgres(cp_embedded):
    cp = cp_embedded
    assert "TOLLGATE_PG_HOST" not in cp.env

    status = cp.admin.get("/status")
    assert status.status_code == 200
    assert status.json()["database"]["reachable"] is True

    pgdir = os.path.join(cp.prefix, "pg")
    assert os.path.isdir(os.path.join(pgdir, "data"))
    assert processes_under(pgdir), "no PostgreSQL process runs under <prefix>/pg"

    assert cp.stop(signal.SIGTERM) == 0
    assert processes_under(pgdir) == [], "PostgreSQL outlived the CP"
    assert not os.path.exists(os.path.join(pgdir, "data", "postmaster.pid"))
