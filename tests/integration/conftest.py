"""Fixtures for Tollgate's integration tests. They start REAL processes on free 127.0.0.1 ports
and always stop them; when a test fails, the logs those processes wrote during it are appended
to the failure report.

  tollgate_bin    path of the binary under test: $TOLLGATE_BIN, default <repo>/build/tollgate
  workdir         session temp dir (mode 0711 so the unprivileged PostgreSQL user can reach
                  it); removed at the end unless TOLLGATE_KEEP_TMP=1
  pg_server       session: private PostgreSQL on 127.0.0.1:<port>; .stop() .start()
                  .create_database(name) .connect(db) .dsn(db); skips if PostgreSQL is absent
  cp_factory      module: cp_factory(embedded=False, database=None, env=None, start=True,
                  name=None) -> CpProcess; each call gets its own database unless `database`
                  is given (several CP nodes on one database)
  cp              module: one started CP on a fresh database of its own
  admin           module: AdminClient for cp's plain-HTTP Admin API (get/post/put/patch/delete)
  cp_embedded     function: a started CP with no pg_host (embedded PostgreSQL under its prefix)

CpProcess: .admin_url .admin_https_url .status_url .cluster_address .prefix .env .log_path
.start() .stop(sig=SIGTERM) -> exit code, .run_cli(*args) -> CompletedProcess, .admin,
.admin_client(https=False, token=None).
Mark tests that should also run against the ASan build with @pytest.mark.asan.
"""
import os
import re
import shutil
import tempfile

import pytest

from harness import procs
from harness.cp import AdminClient, CpProcess
from harness.pg import PgServer, pg_bindir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_configure(config):
    config.addinivalue_line("markers",
                            "asan: also run against the ASan/UBSan build (scripts/test.sh)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._tg_log_offsets = procs.log_offsets()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for title, text in procs.failure_sections(getattr(item, "_tg_log_offsets", {})):
            report.sections.append((title, text))


def pytest_sessionfinish(session, exitstatus):
    procs.stop_all()


@pytest.fixture(scope="session")
def tollgate_bin():
    path = os.path.abspath(os.environ.get("TOLLGATE_BIN") or os.path.join(REPO, "build",
                                                                          "tollgate"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not an executable: build it (bash scripts/test.sh does) or set "
                    "TOLLGATE_BIN", pytrace=False)
    return path


@pytest.fixture(scope="session")
def workdir():
    path = tempfile.mkdtemp(prefix="tollgate-it-")
    os.chmod(path, 0o711)
    os.makedirs(os.path.join(path, "logs"))
    yield path
    procs.stop_all()
    procs.kill_processes_under(path)
    if os.environ.get("TOLLGATE_KEEP_TMP") == "1":
        print(f"\nkept {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(workdir):
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (install the postgresql package)")
    server = PgServer(workdir, bindir, os.path.join(workdir, "logs"))
    try:
        server.init()
        yield server
    finally:
        server.stop()


def _sanitizer_check(cps):
    findings = []
    for cp in cps:
        report = procs.sanitizer_report(cp.log_text())
        if report:
            findings.append(f"{cp.name} ({cp.log_path}):\n{report}")
    if findings:
        pytest.fail("sanitizer findings:\n" + "\n".join(findings), pytrace=False)


@pytest.fixture(scope="module")
def cp_factory(request, tollgate_bin, workdir):
    module = re.sub(r"\W", "_", request.module.__name__.split(".")[-1])
    created = []

    def make(embedded=False, database=None, env=None, start=True, name=None):
        name = name or f"{module}-cp{len(created) + 1}"
        prefix = tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)
        os.chmod(prefix, 0o711)
        pg = None
        if not embedded:
            pg = request.getfixturevalue("pg_server")
            database = database or pg.create_database(f"{module}_{len(created) + 1}")
        cp = CpProcess(tollgate_bin, prefix, os.path.join(workdir, "logs"), name=name, pg=pg,
                       database=database, env=env)
        created.append(cp)
        if start:
            cp.start()
        return cp

    yield make
    for cp in reversed(created):
        cp.cleanup()
    _sanitizer_check(created)


@pytest.fixture(scope="module")
def cp(cp_factory):
    return cp_factory()


@pytest.fixture(scope="module")
def admin(cp):
    client = AdminClient(cp.admin_url)
    yield client
    client.close()


@pytest.fixture
def cp_embedded(cp_factory):
    return cp_factory(embedded=True)
