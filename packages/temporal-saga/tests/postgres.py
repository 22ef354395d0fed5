"""A private, throwaway PostgreSQL cluster for the tests, from Debian's server binaries.

initdb into a temporary directory, trust authentication, no TCP (a unix socket in that
directory), no durability. PostgreSQL refuses to run as root: as root, the server runs as the
`postgres` user (or `nobody`). Where there is no server, the PostgreSQL tests skip, or fail
under CI=true (CI installs PostgreSQL).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from psycopg.rows import TupleRow

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_USERS = ("postgres", "nobody")
"""Who runs the server when the tests run as root, first one that exists."""
SUPERUSER = "postgres"
INITDB_OPTIONS = ("-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
SETTINGS = "listen_addresses = ''\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
"""No TCP (the unix socket only), no durability."""


def unavailable(reason: str) -> NoReturn:
    """Skip the PostgreSQL tests, or fail them in CI (CI=true), where PostgreSQL must be."""
    message = f"PostgreSQL tests need a PostgreSQL server: {reason} (apt-get install postgresql)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb and pg_ctl."""
    found = [
        b
        for b in DEBIAN_ROOT.glob("*/bin")
        if (b / "initdb").is_file() and (b / "pg_ctl").is_file()
    ]
    return max(
        found, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else -1, default=None
    )


def _server_user() -> pwd.struct_passwd | None:
    """None when not root; else the account the server runs as."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    unavailable(f"running as root and none of the users {SERVER_USERS} exists to run it")


class Cluster:
    """A running cluster: `database` gives a fresh database's SQLAlchemy URL."""

    def __init__(self, bindir: Path, root: Path, user: pwd.struct_passwd | None) -> None:
        self.bindir, self.root, self.data = bindir, root, root / "data"
        self._as_user = [] if user is None else ["runuser", "-u", user.pw_name, "--"]

    def run(self, program: str, *arguments: str) -> None:
        command = [*self._as_user, str(self.bindir / program), *arguments]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(
                f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
                + (log.read_text() if log.exists() else "")
            )

    def admin(self) -> psycopg.Connection[TupleRow]:
        return psycopg.connect(
            host=str(self.root), user=SUPERUSER, dbname="postgres", autocommit=True
        )

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new, empty database; yields its URL, drops it (connections and all) on exit."""
        name = f"t_{uuid.uuid4().hex}"
        with self.admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://{SUPERUSER}@/{name}?host={self.root}"
        finally:
            with self.admin() as admin:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@contextmanager
def cluster() -> Iterator[Cluster]:
    """Start a cluster for the session; stop it and remove its directory on exit."""
    bindir = find_bindir()
    if bindir is None:
        unavailable(f"no initdb and pg_ctl under {DEBIAN_ROOT}/*/bin")
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="saga-pg-"))
    try:
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        pg = Cluster(bindir, root, user)
        pg.run("initdb", "-D", str(pg.data), "-U", SUPERUSER, *INITDB_OPTIONS)
        with (pg.data / "postgresql.conf").open("a") as conf:
            conf.write(f"{SETTINGS}unix_socket_directories = '{root}'\n")
        pg.run("pg_ctl", "-D", str(pg.data), "-l", str(root / "server.log"), "-w", "start")
        try:
            yield pg
        finally:
            pg.run("pg_ctl", "-D", str(pg.data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
