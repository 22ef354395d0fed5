"""A private, throwaway PostgreSQL cluster, and a fresh database in it on demand.

The cluster runs from the server binaries of the machine's PostgreSQL (Debian's
`postgresql` package): initdb into a temporary directory, trust authentication, loopback
only, on a free port, with durability turned off (nothing in it outlives the cluster), in
memory (/dev/shm) where there is room. PostgreSQL refuses to run as root; as root, the server
runs as the `postgres` user. The tests run their PostgreSQL stores on it, and so does
`pizza bench --store postgres`.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pizza_saga.common.ports import free_port

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

INSTALL_HINT = "apt-get install -y postgresql"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
PREFERRED_VERSION = "15"
SERVER_USER = "postgres"
START_ATTEMPTS = 3
"""A free port can be taken by another process before the server binds it; try another."""
MEMORY_DIR = Path("/dev/shm")
MEMORY_DIR_ROOM = 1 << 30
"""Free bytes /dev/shm needs to hold the cluster (a container's default 64 MiB is too few).

Creating a database there takes about a tenth of the time it takes on disk,
even without fsync.
"""

NO_SERVER = "no initdb under /usr/lib/postgresql/*/bin nor in pg_config --bindir"
"""Why `require_bindir` found no PostgreSQL server."""

SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
"""Loopback only; room for several workers' connection pools; no durability."""


def _has_server(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def _version_key(bindir: Path) -> tuple[int, str]:
    version = bindir.parent.name
    return (int(version), version) if version.isdigit() else (-1, version)


def find_bindir() -> Path | None:
    """The directory of PostgreSQL's server binaries: version 15 first, then the newest."""
    candidates = [DEBIAN_ROOT / PREFERRED_VERSION / "bin"]
    candidates += sorted(DEBIAN_ROOT.glob("*/bin"), key=_version_key, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found:
            candidates.append(Path(found))
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).parent)
    return next((bindir for bindir in candidates if _has_server(bindir)), None)


class PostgresUnavailable(Exception):
    """This machine cannot run a private PostgreSQL cluster; the message says why."""


def require_bindir() -> Path:
    """`find_bindir`'s directory; PostgresUnavailable if PostgreSQL's server is not installed."""
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            f"PostgreSQL's server is not installed: {NO_SERVER} ({INSTALL_HINT})"
        )
    return bindir


def _scratch_dir() -> Path | None:
    """Where the cluster's directory goes: /dev/shm if it has room, else the default."""
    try:
        roomy = shutil.disk_usage(MEMORY_DIR).free >= MEMORY_DIR_ROOM
    except OSError:
        return None
    return MEMORY_DIR if roomy and os.access(MEMORY_DIR, os.W_OK | os.X_OK) else None


class PostgresCluster:
    """A running throwaway cluster; `start` it, take `database`s from it, `stop` it."""

    def __init__(self, bindir: Path, root: Path, as_user: Sequence[str]) -> None:
        self.bindir, self.root, self._as_user = bindir, root, list(as_user)
        self.data, self.log = root / "data", root / "server.log"
        self.port = 0
        self._admin: psycopg.Connection[TupleRow] | None = None
        # DROP DATABASE ... WITH (FORCE) waits about 0.1 s for the backends it terminates to
        # exit; dropping on a thread of its own lets the next test start meanwhile.
        self._dropper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="drop-database")
        self._drops: list[Future[None]] = []

    @classmethod
    def start(cls, bindir: Path) -> PostgresCluster:
        """initdb a cluster in a new temporary directory and start it on a free port.

        PostgresUnavailable if it cannot run here (no psycopg driver; as root, without a
        `postgres` user); RuntimeError, with the server's log, if initdb or the server fails.
        """
        if importlib.util.find_spec("psycopg") is None:
            raise PostgresUnavailable(
                "the psycopg driver is not installed (pip install 'pizza-saga[postgres]')"
            )
        as_user: list[str] = []
        root = Path(tempfile.mkdtemp(prefix="pizza-postgres-", dir=_scratch_dir()))
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(SERVER_USER)
            except KeyError:
                shutil.rmtree(root)
                raise PostgresUnavailable(
                    f"running as root and there is no {SERVER_USER!r} user to run it"
                ) from None
            os.chown(root, owner.pw_uid, owner.pw_gid)
            as_user = ["runuser", "-u", SERVER_USER, "--"]
        cluster = cls(bindir, root, as_user)
        try:
            cluster._initdb()
            cluster._start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _run(self, *command: str) -> None:
        done = subprocess.run(
            [*self._as_user, *command],
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}{log}"
            )

    def _initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            *("-D", str(self.data), "-A", "trust", "-U", SERVER_USER),
            *("-E", "UTF8", "--locale=C", "--no-sync"),
        )
        settings = {**SERVER_SETTINGS, "unix_socket_directories": f"'{self.root}'"}
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _start(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = free_port()
            try:
                self._pg_ctl("-o", f"-p {self.port}", "-l", str(self.log), "start")
                break
            except RuntimeError:
                if attempt == START_ATTEMPTS:
                    raise
        self._admin = self._connect()

    def _connect(self) -> psycopg.Connection[TupleRow]:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=SERVER_USER, dbname="postgres", autocommit=True
        )

    def _pg_ctl(self, *arguments: str) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", *arguments)

    @property
    def postmaster_pid(self) -> int:
        """The server's main process (its backends are its children), from postmaster.pid."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def url(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of ``database`` on this cluster."""
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new, empty database, yields its URL; on exit it is dropped, connections and all.

        The drop runs in the background: `wait_for_drops` (and `stop`) waits for it.
        """
        assert self._admin is not None, "the cluster is not running"
        name = f"pizza_{uuid.uuid4().hex}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            self._drops.append(self._dropper.submit(self._drop, name))

    def _drop(self, name: str) -> None:
        with self._connect() as connection:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    def wait_for_drops(self) -> None:
        """Wait until the databases handed back so far are dropped; raise a failed drop's error."""
        drops, self._drops = self._drops, []
        for drop in drops:
            drop.result()

    def stop(self) -> None:
        """Finish the drops, stop the server (fast: disconnects clients), remove its directory."""
        try:
            self.wait_for_drops()
        finally:
            self._stop_server()

    def _stop_server(self) -> None:
        try:
            self._dropper.shutdown(wait=True)
            if self._admin is not None:
                self._admin.close()
                self._admin = None
            if (self.data / "postmaster.pid").exists():
                self._pg_ctl("-m", "fast", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
