"""A private PostgreSQL server for integration tests, on 127.0.0.1:<free port>.

initdb into a temporary directory, trust authentication (local testing only), no unix socket,
durability switched off for speed. PostgreSQL refuses to run as root, so when the tests run as
root the server runs as the same unprivileged system user the embedded mode uses (`tollgate`).
The bootstrap superuser is `postgres`; the CP connects as the ordinary role `tollgate`, which
owns every database create_database() makes, as it would in production.
"""
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess

import psycopg2

from .procs import LOOPBACK, ManagedProcess, free_port, tail, wait_for

RUN_AS_USER = "tollgate"
APP_ROLE = "tollgate"
SUPERUSER = "postgres"


def pg_bindir():
    """Highest /usr/lib/postgresql/<N>/bin holding initdb, else `pg_config --bindir`, else None."""
    candidates = sorted(
        (d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.access(f"{d}/initdb", os.X_OK)),
        key=lambda d: int(re.sub(r"\D", "", d.split("/")[-2]) or 0))
    if candidates:
        return candidates[-1]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        d = out.stdout.strip()
        if out.returncode == 0 and os.access(f"{d}/initdb", os.X_OK):
            return d
    return None


def system_user(name=RUN_AS_USER):
    """(uid, gid) to run PostgreSQL as: `name` (created when missing) as root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", name], check=False)
        pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


class PgServer:
    def __init__(self, basedir, bindir, log_dir, durable=False):
        """durable=False trades crash safety for speed (tests); benchmarks pass True."""
        self.dir = os.path.join(basedir, "pg")
        self.data = os.path.join(self.dir, "data")
        self.bindir = bindir
        self.host = LOOPBACK
        self.port = free_port()
        self.user = APP_ROLE
        self.superuser = SUPERUSER
        self.run_as = system_user()
        self._dbs = 0
        self.process = ManagedProcess(
            "postgres", [os.path.join(bindir, "postgres"), "-D", self.data,
                         "-p", str(self.port),
                         "-c", f"listen_addresses={LOOPBACK}",
                         "-c", "unix_socket_directories=",
                         "-c", "max_connections=300"] +
            ([] if durable else ["-c", "fsync=off", "-c", "synchronous_commit=off",
                                 "-c", "full_page_writes=off"]),
            os.path.join(log_dir, "postgres.log"), cwd=self.dir, user=self.run_as,
            stop_signal=signal.SIGINT, death_signal=signal.SIGINT)

    # -- lifecycle -----------------------------------------------------------------------

    def init(self):
        os.makedirs(self.dir, mode=0o700)
        if self.run_as:
            os.chown(self.dir, *self.run_as)
        extra = {"user": self.run_as[0], "group": self.run_as[1], "extra_groups": []} \
            if self.run_as else {}
        out = subprocess.run(
            [os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", SUPERUSER, "-E", "UTF8",
             "--locale=C", "--auth-local=trust", "--auth-host=trust", "--no-sync"],
            cwd=self.dir, capture_output=True, text=True, **extra)
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.stdout}\n{out.stderr}")
        self.start()
        self._superuser_sql(f"CREATE ROLE {APP_ROLE} LOGIN")
        return self

    def start(self, timeout=30):
        """(Re)starts the server on the same port and waits until it accepts connections."""
        self.process.start()

        def ready():
            if not self.process.running():
                raise RuntimeError("postgres exited during start-up:\n"
                                   + tail(self.process.log_path, 30))
            try:
                psycopg2.connect(self.dsn("postgres", SUPERUSER), connect_timeout=2).close()
                return True
            except psycopg2.OperationalError:
                return False
        wait_for(ready, timeout, what=f"postgres on {self.host}:{self.port}")
        return self

    def stop(self, timeout=30):
        """Fast shutdown (SIGINT); returns the exit code. For outage tests: start() again."""
        return self.process.stop(signal.SIGINT, timeout)

    def running(self):
        return self.process.running()

    # -- databases -----------------------------------------------------------------------

    def dsn(self, dbname, user=None):
        return (f"host={self.host} port={self.port} dbname={dbname} user={user or self.user} "
                "connect_timeout=5")

    def connect(self, dbname="postgres", user=None):
        """A psycopg2 connection in autocommit mode; caller closes it. The user defaults to the
        superuser on `postgres` and to the app role elsewhere."""
        if user is None:
            user = SUPERUSER if dbname == "postgres" else self.user
        conn = psycopg2.connect(self.dsn(dbname, user))
        conn.autocommit = True
        return conn

    def create_database(self, name=None):
        """Creates an empty database owned by the app role; returns its name."""
        self._dbs += 1
        name = re.sub(r"[^a-z0-9_]", "_", (name or f"tg_{self._dbs}").lower())[:60]
        self._superuser_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                            f'CREATE DATABASE "{name}" OWNER {APP_ROLE}')
        return name

    def _superuser_sql(self, *statements):
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
