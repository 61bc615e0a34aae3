"""A private PostgreSQL cluster (Debian's postgresql 15) for the store tests and the benches.

initdb and pg_ctl run as the postgres user (TESTBED-NOTES "A private PostgreSQL cluster"); the
server listens on a socket folder of its own and on 127.0.0.1:5433, which is private inside
scripts/sandbox. Tests connect as the role `zivmilter` over TCP with scram: its password is only
in a PGPASSFILE (mode 0600) that this process and its children inherit, so the DSNs handed to
the code under test carry none, as a site's configuration must not.

A template database is migrated once (`zivmilter store migrate`'s code); each test gets a fresh
database copied from it (CREATE DATABASE ... TEMPLATE: milliseconds), dropped after the test.

    cluster = shared_cluster()          # started on first use, stopped at exit
    dsn = cluster.database_for(tmp_path)  # the same database for every handle of one test
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
PORT = 5433
ROLE = "zivmilter"
TEMPLATE = "zivmilter_template"


class PostgresError(AssertionError):
    """The private cluster did not start or stop as a test needs (fails the test)."""


class Cluster:
    """One initdb'd cluster in a temporary folder; `start()` and `stop()` once each."""

    def __init__(self, port: int = PORT) -> None:
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="zivmilter-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "pg.log"
        # The password file belongs to the test process (root), not to the server's user.
        self._secrets = Path(tempfile.mkdtemp(prefix="zivmilter-pgpass-"))
        self.passfile = self._secrets / "pgpass"
        self._lock = threading.Lock()
        self._by_key: dict[str, str] = {}
        self._started = False

    # -- the server -------------------------------------------------------------------------

    def start(self) -> Cluster:
        if not (BIN / "initdb").exists():
            raise PostgresError(f"{BIN}/initdb missing: run scripts/install (Debian postgresql)")
        pg = pwd.getpwnam("postgres")
        self.sock.mkdir()
        os.chown(self.root, pg.pw_uid, pg.pw_gid)
        os.chown(self.sock, pg.pw_uid, pg.pw_gid)
        self._as_postgres(
            str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
            "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions",
        )  # fmt: skip
        options = (
            f"-c listen_addresses={HOST} -c port={self.port} -c unix_socket_directories={self.sock}"
            " -c max_connections=300 -c shared_buffers=32MB -c fsync=on"
            " -c synchronous_commit=on"
        )
        self._as_postgres(
            str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip
        self._started = True
        password = secrets.token_urlsafe(18)
        self.psql(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}'")
        self.passfile.write_text(f"{HOST}:{self.port}:*:{ROLE}:{password}\n")
        os.chmod(self.passfile, 0o600)
        os.environ["PGPASSFILE"] = str(self.passfile)  # children (zivmilter processes) inherit it
        self.psql(f"CREATE DATABASE {TEMPLATE} OWNER {ROLE}")
        from zivmilter.store.postgresql.schema import migrate_database

        migrate_database(self.dsn(TEMPLATE))
        return self

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self._secrets, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the socket (peer authentication as postgres)."""
        return self._as_postgres(
            str(BIN.parent / "bin" / "psql"), "-h", str(self.sock), "-p", str(self.port),
            "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-qAtc", sql,
        )  # fmt: skip

    def _as_postgres(self, *argv: str) -> str:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=120,
        )
        if done.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise PostgresError(f"{argv[0]}: {done.stderr.strip()}\n{tail}")
        return done.stdout

    # -- databases ---------------------------------------------------------------------------

    def dsn(self, database: str) -> str:
        """A DSN as a site would write it: no password (it comes from PGPASSFILE)."""
        return f"host={HOST} port={self.port} dbname={database} user={ROLE}"

    def new_database(self) -> str:
        """A fresh database at the current schema, copied from the migrated template."""
        name = "t_" + secrets.token_hex(6)
        self.psql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} OWNER {ROLE}")
        return name

    def empty_database(self) -> str:
        """A fresh database with no schema at all (what `zivmilter store migrate` starts from)."""
        name = "e_" + secrets.token_hex(6)
        self.psql(f"CREATE DATABASE {name} OWNER {ROLE}")
        with self._lock:
            self._by_key["empty:" + name] = name
        return name

    def database_for(self, key: object) -> str:
        """The DSN of the database belonging to `key` (a test's tmp_path): created on first use,
        so every handle a test opens on "its" store reaches the same database."""
        with self._lock:
            name = self._by_key.get(str(key))
            if name is None:
                name = self._by_key[str(key)] = self.new_database()
        return self.dsn(name)

    def drop_all(self) -> None:
        """Drop the databases handed out so far (after each test: the disk stays small)."""
        with self._lock:
            names, self._by_key = list(self._by_key.values()), {}
        for name in names:
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


_shared: Cluster | None = None
_shared_lock = threading.Lock()


def shared_cluster() -> Cluster:
    """The session's cluster, started on first use and stopped when the process exits."""
    global _shared
    with _shared_lock:
        if _shared is None:
            cluster = Cluster()
            try:
                cluster.start()
            except BaseException:
                cluster.stop()
                raise
            atexit.register(cluster.stop)
            _shared = cluster
        return _shared


def started() -> Cluster | None:
    """The session's cluster if one was started (for per-test cleanup)."""
    return _shared
