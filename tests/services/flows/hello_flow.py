"""A tiny flow that the services tests deploy from source and run on a Prefect worker."""

import os
from pathlib import Path

from prefect import flow


@flow(name="services-hello")
def hello(out: str, text: str = "hello") -> str:
    """Write ``text`` and the worker-side pid to ``out``: proof that a worker ran it."""
    Path(out).write_text(f"{text} {os.getpid()}")
    return text
