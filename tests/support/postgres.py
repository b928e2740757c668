"""A throwaway PostgreSQL server for the tests (initdb into a temporary folder, loopback only,
password authentication) and its fixtures; a test skips with the reason when none can be started,
and fails instead under ``ABLATE_REQUIRE_POSTGRES=1`` (CI sets it)."""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest




def pg_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = [shutil.which("initdb"), shutil.which("pg_ctl")]
    if all(found) and Path(found[0]).resolve().parent == Path(found[1]).resolve().parent:
        return Path(found[0]).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                        if Path(p).parent.name.isdigit() else 0, reverse=True)
    candidates += ["/usr/local/pgsql/bin"]
    for d in map(Path, candidates):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def pg_unavailable(why: str):
    if os.environ.get("ABLATE_REQUIRE_POSTGRES", "0") not in ("", "0"):
        pytest.fail(f"ABLATE_REQUIRE_POSTGRES is set but no PostgreSQL server could be started: {why}")
    pytest.skip(f"no PostgreSQL server for the cluster tests: {why}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A PostgreSQL server on 127.0.0.1 with a password-protected, non-superuser role."""

    user = "ablate"

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.password = "pw" + secrets.token_hex(12)  # unique: any occurrence in an output is a leak
        self.admin_password = secrets.token_hex(12)
        self.base = Path(tempfile.mkdtemp(prefix="ablate-pg-"))
        self.data, self.sock, self.log = self.base / "data", self.base / "sock", self.base / "server.log"
        self.sock.mkdir()
        (self.base / "pwfile").write_text(self.admin_password + "\n")
        self.run_as: dict = {}
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            account = next((a for a in (os_account("postgres"), os_account("nobody")) if a), None)
            if account is None:
                pg_unavailable("running as root and there is neither a 'postgres' nor a 'nobody' account to run it as")
            self.run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            for p in (self.base, self.sock, self.base / "pwfile"):
                os.chown(p, account.pw_uid, account.pw_gid)
        self.port = 0
        self._databases = 0

    def _pg(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bindir / args[0]), *args[1:]], cwd=self.base, capture_output=True,
                              text=True, timeout=timeout, **self.run_as)

    def start(self) -> None:
        r = self._pg("initdb", "-D", str(self.data), "-U", "admin", f"--pwfile={self.base / 'pwfile'}",
                     "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
        if r.returncode:
            pg_unavailable(f"initdb failed: {r.stderr.strip()[-500:]}")
        for _ in range(3):  # a free port can be taken between the probe and the server's bind
            self.port = free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            r = self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
            if r.returncode == 0:
                break
        else:
            log = self.log.read_text()[-800:] if self.log.exists() else ""
            pg_unavailable(f"pg_ctl start failed: {r.stderr.strip()[-300:]} {log}")
        self.admin(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")

    def admin(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="admin", password=self.admin_password,
                                dbname="postgres")
        conn.autocommit = True
        try:
            conn.cursor().execute(sql)
        finally:
            conn.close()

    def rows_containing(self, url: str, needle: str) -> list[str]:
        """Every row, of every table of the URL's database, whose text holds ``needle``."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="admin", password=self.admin_password,
                                dbname=url.rsplit("/", 1)[1])
        try:
            cur = conn.cursor()
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = [r[0] for r in cur.fetchall()]
            assert "trials" in tables and "trial_system_attributes" in tables, tables
            hits = []
            for table in tables:
                cur.execute(f'SELECT t::text FROM "{table}" t')
                hits += [f"{table}: {r[0][:200]}" for r in cur.fetchall() if needle in r[0]]
            return hits
        finally:
            conn.close()

    def new_database(self) -> str:
        """A fresh database owned by the test role; returns its URL (password included)."""
        self._databases += 1
        name = f"study{self._databases}"
        self.admin(f"CREATE DATABASE {name} OWNER {self.user}")
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.data.exists():
            self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)


def os_account(name: str):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


@pytest.fixture(scope="module")
def pg_server():
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pg_unavailable("the driver psycopg2 is not installed (pip install psycopg2-binary; it is in the "
                     "'test' and 'cluster' extras)")
    bindir = pg_bindir()
    if bindir is None:
        pg_unavailable("initdb and pg_ctl are neither on PATH nor in /usr/lib/postgresql/*/bin "
                     "(apt-get install postgresql)")
    server = Server(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """The URL of a fresh, empty database on the module's server."""
    return pg_server.new_database()
