"""Start, inspect and stop the whole stack (``make services`` / ``make services-stop``).

Order matters: PostgreSQL first (every other service keeps its state there), then the MLflow
and Prefect servers side by side, then the work pool, the workers and the deployments. What
was started is written to ``<state_dir>/stack.json`` as it starts, so a start that fails half
way is undone, and ``stop`` finds every process again from another shell. A second ``start``
of a running stack only reports it; a port held by anything else is named, and nothing starts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabreg.config import ServicesConfig
from tabreg.errors import ServiceError
from tabreg.services import deployments, dvc_remote, mlflow_server, postgres, prefect_server
from tabreg.services.processes import (
    Process,
    log_tail,
    port_in_use,
    spawn,
    terminate,
    wait_http,
    who_listens,
)

Echo = Callable[[str], None]
WORKERS_TIMEOUT = 120.0  # seconds for the workers' first heartbeat


@dataclass(frozen=True)
class Layout:
    """Where the stack keeps its state (all under ``services.state_dir``)."""

    root: Path
    state: Path

    @classmethod
    def of(cls, services: ServicesConfig, root: Path) -> Layout:
        state = Path(services.state_dir).expanduser()
        return cls(root.resolve(), state if state.is_absolute() else root.resolve() / state)

    pgdata = property(lambda self: self.state / "postgres")
    password = property(lambda self: self.state / "postgres.password")
    logs = property(lambda self: self.state / "logs")
    artifacts = property(lambda self: self.state / "mlflow-artifacts")
    prefect_home = property(lambda self: self.state / "prefect")
    state_file = property(lambda self: self.state / "stack.json")
    env_file = property(lambda self: self.state / "env")


def database_url(services: ServicesConfig, layout: Layout) -> str:
    """The PostgreSQL server to use (the user's, or ours with its generated password)."""
    if services.database_url:
        return services.database_url
    password = layout.password.read_text().strip() if layout.password.exists() else ""
    return postgres.url(postgres.SUPERUSER, password, services.host, services.postgres_port,
                        "postgres")


def exports(services: ServicesConfig, layout: Layout) -> dict[str, str]:
    """What a client (this host or another) needs to use the stack."""
    host = "127.0.0.1" if services.host in ("0.0.0.0", "") else services.host
    return {
        "MLFLOW_TRACKING_URI": f"http://{host}:{services.mlflow_port}",
        "PREFECT_API_URL": prefect_server.api_url(services.host, services.prefect_port),
        "OPTUNA_STORAGE": postgres.with_database(database_url(services, layout), "optuna"),
        # The servers' inference log, as a table the monitoring on any host can read.
        "INFERENCE_LOG": postgres.with_database(database_url(services, layout), "inference"),
    }


def _read_state(layout: Layout) -> dict[str, Any] | None:
    try:
        return json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return None


def _write_state(layout: Layout, state: dict[str, Any]) -> None:
    layout.state.mkdir(parents=True, exist_ok=True)
    tmp = layout.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)
    tmp.replace(layout.state_file)


def _processes(state: Mapping[str, Any]) -> list[Process]:
    return [Process(**p) for p in state.get("processes", [])]


def _write_env(layout: Layout, values: Mapping[str, str]) -> str:
    lines = [f"export {k}={v}" for k, v in values.items()]
    layout.env_file.write_text("# written by `make services`; `source` it\n"
                               + "\n".join(lines) + "\n")
    layout.env_file.chmod(0o600)  # holds the database password
    return "\n".join(lines)


def _busy_ports(services: ServicesConfig) -> list[str]:
    wanted = [("MLflow server", services.mlflow_port), ("Prefect server", services.prefect_port)]
    if not services.database_url:
        wanted.insert(0, ("PostgreSQL", services.postgres_port))
    return [f"port {port} ({name}) on {services.host} is in use by {who_listens(port)}"
            for name, port in wanted if port_in_use(services.host, port)]


def start(services: ServicesConfig, root: Path, echo: Echo = print,
          env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Start the stack unless it runs already; return its status."""
    layout = Layout.of(services, root)
    previous = _read_state(layout)
    if previous is not None:
        procs = _processes(previous)
        alive = [p.name for p in procs if p.alive()]
        if procs and len(alive) == len(procs):
            echo(f"services already running from {layout.state} (nothing started):")
            echo(_write_env(layout, previous["exports"]))
            return {**status(services, root), "already_running": True}
        if alive:
            raise ServiceError(
                f"the services in {layout.state} are partly running (running: "
                f"{', '.join(alive)}; stopped: "
                f"{', '.join(p.name for p in procs if p.name not in alive)}): run "
                f"`make services-stop`, then `make services`")
        layout.state_file.unlink(missing_ok=True)
    busy = _busy_ports(services)
    if busy:
        raise ServiceError("cannot start the services, nothing was started:\n  "
                           + "\n  ".join(busy) + "\nstop what holds the port, or choose "
                           "other ports under services: in params.yaml")
    began = time.monotonic()
    state: dict[str, Any] = {"root": str(layout.root), "processes": [], "exports": {},
                             "own_postgres": not services.database_url}
    try:
        _start_all(services, layout, state, dict(os.environ if env is None else env), echo)
    except BaseException:
        echo("start failed: stopping what was started")
        _stop_processes(layout, state, lambda _: None)
        layout.state_file.unlink(missing_ok=True)
        raise
    seconds = time.monotonic() - began
    state["started_in_s"] = round(seconds, 1)
    _write_state(layout, state)
    echo(f"services started in {seconds:.1f} s (state, pids and logs in {layout.state}):")
    for line in _describe(services, layout, state):
        echo("  " + line)
    echo(f"Point the pipeline at them (the same lines are in {layout.env_file}; "
         f"`source` it):")
    echo(_write_env(layout, state["exports"]))
    return status(services, root)


def _start_all(services: ServicesConfig, layout: Layout, state: dict[str, Any],
               base_env: dict[str, str], echo: Echo) -> None:
    for folder in (layout.logs, layout.artifacts, layout.prefect_home):
        folder.mkdir(parents=True, exist_ok=True)
    if state["own_postgres"]:
        import psutil

        postgres.init(layout.pgdata, layout.password)
        postgres.start(layout.pgdata, services.host, services.postgres_port,
                       layout.logs / "postgres.log")
        pid = postgres.server_pid(layout.pgdata)
        if pid is None:
            raise ServiceError(f"PostgreSQL did not start; see {layout.logs / 'postgres.log'}")
        state["processes"].append(Process(
            "postgres", pid, psutil.Process(pid).create_time(),
            str(layout.logs / "postgres.log"), services.postgres_port).to_dict())
        _write_state(layout, state)
    server = database_url(services, layout)
    postgres.create_databases(server)
    state["exports"] = exports(services, layout)
    tracking, api = state["exports"]["MLFLOW_TRACKING_URI"], state["exports"]["PREFECT_API_URL"]

    mlflow = spawn("mlflow server", mlflow_server.command(
        postgres.with_database(server, "mlflow"), layout.artifacts, services.host,
        services.mlflow_port, services.mlflow_workers), layout.logs / "mlflow.log",
        mlflow_server.server_env(base_env), layout.root, services.mlflow_port)
    prefect = spawn("prefect server", prefect_server.server_command(
        services.host, services.prefect_port), layout.logs / "prefect-server.log",
        prefect_server.server_env(base_env, layout.prefect_home,
                                  postgres.with_database(server, "prefect",
                                                         "postgresql+asyncpg")),
        layout.root, services.prefect_port)
    state["processes"] += [mlflow.to_dict(), prefect.to_dict()]
    _write_state(layout, state)
    wait_http(prefect, prefect_server.health_url(api), prefect_server.STARTUP_TIMEOUT)
    deployments.ensure_pool(api, services.work_pool)

    names = [f"{services.work_pool}-{os.uname().nodename}-{i + 1}"
             for i in range(services.prefect_workers)]
    worker_env = prefect_server.worker_env(base_env, layout.prefect_home, state["exports"])
    for name in names:
        state["processes"].append(spawn(
            f"prefect worker {name}", prefect_server.worker_command(services.work_pool, name),
            layout.logs / f"{name}.log", worker_env, layout.root).to_dict())
    _write_state(layout, state)

    deployed = deployments.deploy_tune_worker(api, layout.root, services.work_pool,
                                              services.deploy_source)
    state["deployments"] = [deployed] if deployed else []
    if deployed is None:
        echo(f"note: {deployments.TUNE_WORKER_ENTRYPOINT.split(':')[0]} does not exist in "
             f"{layout.root}: the tune-worker deployment was not created")
    state["dvc_remote"] = dvc_remote.configure(layout.root, services.dvc_remote)
    wait_http(mlflow, mlflow_server.health_url(tracking), mlflow_server.STARTUP_TIMEOUT)
    _wait_workers(api, services.work_pool, names, layout, state)


def _wait_workers(api: str, pool: str, names: list[str], layout: Layout,
                  state: Mapping[str, Any]) -> None:
    deadline = time.monotonic() + WORKERS_TIMEOUT
    workers = [p for p in _processes(state) if p.name.startswith("prefect worker")]
    while set(names) - prefect_server.online_workers(api, pool):
        dead = [p for p in workers if not p.alive()]
        if dead or time.monotonic() > deadline:
            worker = dead[0] if dead else workers[0]
            why = "exited" if dead else f"is not online after {WORKERS_TIMEOUT:.0f} s"
            raise ServiceError(f"{worker.name} {why}; its log ({worker.log}) ends with:\n"
                               f"{log_tail(worker.log)}")
        time.sleep(1.0)


def _describe(services: ServicesConfig, layout: Layout, state: Mapping[str, Any]) -> list[str]:
    out = state["exports"]
    db = ("PostgreSQL      " + (f"{services.host}:{services.postgres_port} (ours, data in "
                                f"{layout.pgdata})" if state["own_postgres"] else
                                postgres.hide_password(services.database_url or ""))
          + f"; databases {', '.join(postgres.DATABASES)}")
    workers = [p["name"].removeprefix("prefect worker ") for p in state["processes"]
               if p["name"].startswith("prefect worker")]
    lines = [db,
             f"MLflow server   {out['MLFLOW_TRACKING_URI']} (artifacts in {layout.artifacts})",
             f"Prefect server  {out['PREFECT_API_URL']} (UI {out['PREFECT_API_URL'][:-4]})",
             f"Prefect workers {len(workers)} on pool {services.work_pool!r}: "
             f"{', '.join(workers) or '-'}"]
    for name in state.get("deployments", []):
        lines.append(f"deployment      {name} on pool {services.work_pool!r}")
    if state.get("dvc_remote"):
        lines.append(f"DVC remote      {dvc_remote.REMOTE_NAME!r} -> {state['dvc_remote']} "
                     "(default, in .dvc/config.local)")
    return lines


def _stop_processes(layout: Layout, state: Mapping[str, Any], echo: Echo) -> list[str]:
    """Stop the servers and workers together, then PostgreSQL (cleanly, with pg_ctl)."""
    procs = _processes(state)
    stopped = [p.name for p in terminate([p for p in reversed(procs) if p.name != "postgres"])]
    for proc in procs:
        if proc.name == "postgres" and proc.alive():
            try:
                postgres.stop(layout.pgdata)
            except ServiceError:
                terminate([proc])
            stopped.append(proc.name)
    pids = {proc.name: proc.pid for proc in procs}
    for name in stopped:
        echo(f"stopped {name} (pid {pids[name]})")
    return stopped


def stop(services: ServicesConfig, root: Path, echo: Echo = print) -> dict[str, Any]:
    """Stop everything the stack started from this state folder; says so when nothing ran."""
    layout = Layout.of(services, root)
    state = _read_state(layout)
    stopped: list[str] = []
    if state is not None:
        stopped = _stop_processes(layout, state, echo)
    pid = postgres.server_pid(layout.pgdata)  # a server left without a state file
    if pid is not None and "postgres" not in stopped and _pid_alive(pid):
        postgres.stop(layout.pgdata)
        stopped.append("postgres")
        echo(f"stopped postgres (pid {pid}, found in {layout.pgdata})")
    layout.state_file.unlink(missing_ok=True)
    layout.env_file.unlink(missing_ok=True)
    if not stopped:
        echo(f"no services running from {layout.state}: nothing to stop")
    else:
        echo(f"services stopped ({len(stopped)} processes); data kept in {layout.state}")
    return {"stopped": stopped}


def _pid_alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)


def status(services: ServicesConfig, root: Path) -> dict[str, Any]:
    """Which recorded services are running, and the exports that reach them."""
    layout = Layout.of(services, root)
    state = _read_state(layout)
    if state is None:
        return {"running": False, "state": str(layout.state), "services": {}}
    procs = {p.name: {"pid": p.pid, "port": p.port, "alive": p.alive(), "log": p.log}
             for p in _processes(state)}
    return {"running": bool(procs) and all(p["alive"] for p in procs.values()),
            "state": str(layout.state), "services": procs,
            "exports": state.get("exports", {}), "deployments": state.get("deployments", []),
            "dvc_remote": state.get("dvc_remote"), "started_in_s": state.get("started_in_s"),
            "postgres_bin": str(postgres.bin_dir()) if state.get("own_postgres") else None}


def command(action: str, services: ServicesConfig, root: Path, quiet: bool = False) -> int:
    """``python -m tabreg services start|stop|status``: text for a person, exit code 0."""
    echo: Echo = (lambda _: None) if quiet else print
    if action == "start":
        start(services, root, echo)
    elif action == "stop":
        stop(services, root, echo)
    else:
        info = status(services, root)
        if not info["services"]:
            echo(f"no services running from {info['state']}")
            return 0
        for name, proc in info["services"].items():
            state = "running" if proc["alive"] else "STOPPED"
            port = f" port {proc['port']}" if proc["port"] else ""
            echo(f"{name:<40} {state:<8} pid {proc['pid']}{port}  log {proc['log']}")
        for key, value in info["exports"].items():
            echo(f"{key}={postgres.hide_password(value)}")
        if info["postgres_bin"]:
            echo(f"PostgreSQL tools (pg_dump, psql): {info['postgres_bin']}")
    return 0
