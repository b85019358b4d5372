"""Thread budgets: how many workers, how many threads a fit may use, and that the limits hold."""

import pytest
from threadpoolctl import threadpool_info

from tabreg.errors import ConfigError
from tabreg.resources import fit_threads, resolve_workers, spinning_threads, thread_budget


def test_workers_default_to_one_per_usable_core():
    assert resolve_workers(None, cores=4) == 4
    assert resolve_workers(2, cores=4) == 2


@pytest.mark.parametrize(("workers", "message"), [
    (0, r"tune\.workers: 0 worker processes cannot run a study"),
    (5, r"tune\.workers: 5 workers on 4 usable cores .* tune\.oversubscribe: true"),
])
def test_impossible_worker_counts_are_refused_with_the_key(workers, message):
    with pytest.raises(ConfigError, match=message):
        resolve_workers(workers, cores=4)


def test_more_workers_than_cores_only_when_asked():
    assert resolve_workers(8, cores=4, oversubscribe=True) == 8


def test_each_fit_gets_its_share_of_the_cores_and_at_least_one():
    assert fit_threads(2, cores=2) == 1
    assert fit_threads(1, cores=8) == 8
    assert fit_threads(16, cores=2) == 1


def test_spinning_pools_get_one_thread_unless_told(monkeypatch):
    monkeypatch.delenv("TABREG_SPINNING_THREADS", raising=False)
    assert spinning_threads(8) == 1
    monkeypatch.setenv("TABREG_SPINNING_THREADS", "4")
    assert spinning_threads(8) == 4 and spinning_threads(2) == 2


def test_the_budget_limits_openmp_blas_and_torch_inside_the_block_only(monkeypatch):
    import torch
    from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: F401 (loads OpenMP)

    monkeypatch.delenv("TABREG_SPINNING_THREADS", raising=False)
    torch.set_num_threads(2)
    with thread_budget(2, with_torch=True) as n_jobs:
        assert n_jobs == 2
        assert torch.get_num_threads() == 1
        assert {pool["num_threads"] for pool in threadpool_info()} == {1}
    assert torch.get_num_threads() == 2

