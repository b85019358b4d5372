"""Timing and peak-memory helpers for the benchmarks.

Peak memory is the process's peak resident set size during a block. On Linux the kernel keeps
it (``VmHWM``) and lets a process reset it (``/proc/self/clear_refs``), which is exact and
costs nothing; elsewhere a thread samples the RSS every few milliseconds (psutil).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

MIB = 1 << 20


def _status(key: str) -> int | None:
    """A ``/proc/self/status`` memory figure in bytes (None off Linux)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss() -> int:
    value = _status("VmRSS")
    if value is None:
        import psutil

        value = psutil.Process().memory_info().rss
    return value


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status("VmHWM") is not None


class _Sampler:
    def __init__(self, every: float = 0.005) -> None:
        self.peak, self._every, self._stop = rss(), every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, rss())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss())


@contextmanager
def step(record: dict, name: str) -> Iterator[dict]:
    """Time the block and record, under ``record[name]``, its seconds, its peak RSS and how
    far that peak rose above the RSS at its start (MiB). Yields the entry, for extra fields."""
    entry: dict = {}
    start = rss()
    exact = _reset_peak()
    sampler = None if exact else _Sampler()
    began = time.perf_counter()
    try:
        yield entry
    finally:
        seconds = time.perf_counter() - began
        peak = (_status("VmHWM") or start) if exact else sampler.stop()
        entry.update(seconds=round(seconds, 3), peak_rss_mib=round(peak / MIB, 1),
                     growth_mib=round(max(peak - start, 0) / MIB, 1))
        record[name] = entry


def run_times(command: Sequence[str], reps: int, **kwargs) -> list[float]:
    """Wall-clock seconds of ``reps`` runs of a command (each must succeed)."""
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, **kwargs)
        times.append(time.perf_counter() - began)
    return times


def machine() -> dict:
    """What the figures were measured on."""
    import platform
    from importlib import metadata

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        memory = round(psutil.virtual_memory().total / (1 << 30), 1)
    except ImportError:  # pragma: no cover
        memory = None
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover
        gpu = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model or platform.processor(), "cores": cores, "memory_gib": memory,
            "gpu": gpu, "python": platform.python_version(), "system": platform.system(),
            "versions": {n: metadata.version(n) for n in
                         ("torch", "scikit-learn", "mlflow", "optuna", "prefect", "dvc",
                          "pandas")}}
