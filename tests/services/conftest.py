"""One real stack for the services tests (PostgreSQL, MLflow and Prefect servers, Prefect
workers, a DVC remote folder), in a temporary folder on free ports, stopped after the last of
them even when a test fails (``finally``, and ``atexit`` if the session itself dies).

Package scope, not session: ``make test`` gives the services tests to one worker, early, and a
stack kept until the end of the session served nobody for the ten minutes after them while its
servers still took CPU from the tests that were running."""

from __future__ import annotations

import atexit
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.scoring_helpers import free_port


@dataclass
class Stack:
    services: object  # tabreg.config.ServicesConfig
    root: Path
    layout: object  # tabreg.services.stack.Layout
    exports: dict[str, str]
    status: dict
    started_in_s: float
    output: list[str]


@pytest.fixture(scope="package")
def stack(tmp_path_factory) -> Iterator[Stack]:
    from tabreg.config import ServicesConfig
    from tabreg.errors import ServiceError
    from tabreg.services import postgres
    from tabreg.services import stack as services_stack

    try:
        postgres.bin_dir()
    except ServiceError as exc:
        pytest.skip(f"no PostgreSQL binaries, the services cannot start: {exc}")
    root = tmp_path_factory.mktemp("stack")
    if (ROOT / "flows").is_dir():  # the tune-worker deployment comes from the project's flows
        shutil.copytree(ROOT / "flows", root / "flows",
                        ignore=shutil.ignore_patterns("__pycache__"))
    ports = set()
    while len(ports) < 3:
        ports.add(free_port())
    pg, ml, pf = sorted(ports)
    services = ServicesConfig(postgres_port=pg, mlflow_port=ml, prefect_port=pf,
                              prefect_workers=2, work_pool="tabreg-test")
    output: list[str] = []

    def stop() -> None:
        services_stack.stop(services, root, echo=output.append)

    atexit.register(stop)
    began = time.monotonic()
    try:
        status = services_stack.start(services, root, echo=output.append)
        seconds = time.monotonic() - began
        yield Stack(services, root, services_stack.Layout.of(services, root),
                    status["exports"], status, seconds, output)
    finally:
        stop()
        atexit.unregister(stop)
