"""The shared stack a team runs across machines, started on this one: ``make services``.

PostgreSQL (for MLflow, Prefect and Optuna), an MLflow tracking server with proxied artifacts,
a Prefect server with a process work pool and workers, and a DVC remote. Each module starts,
checks or stops one part; :mod:`tabreg.services.stack` puts them together, and
:mod:`tabreg.services.reachability` checks a set of URLs before a pipeline run relies on them.
Importing any of them starts nothing.
"""
