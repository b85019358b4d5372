"""The fault catalogue: one module per family of faults, each test one fault a hostile but fair
user (or a crash) can cause, and what the system must do about it.

* ``test_numbers``: numbers a float32 feature cannot hold (``inf``, ``1e308``, a 401-digit
  integer) and text in numeric columns, at every entry point (ingest, ``check-file``, the
  contracts, the retrain flow's batch check, serving, ``predict``).
* ``test_malformed_csv``: ragged rows and unterminated quotes in landing batches.
* ``test_data_contract``: a shuffled target and a column stuck at one value (the contract's
  own checks, declared in the suites' ``meta.tabreg_checks``).
* ``test_failed_stage``: a stage failing under ``dvc repro`` keeps its previous outputs.
* ``test_ledger``: a torn last line in the decision ledger.
* ``test_predict_output``: ``predict`` into a folder, an unwritable place, a missing folder.
* ``test_serving_requests``: request bodies too wide to parse.
* ``test_champion_gate``: a test split that changed under the champion (a shuffled target),
  and the ``promotion.max_rmse`` bar for every challenger.
* ``test_landing``: a bad batch first met by ``ingest``, ``validate`` or ``dvc repro`` is
  quarantined as the retrain flow would; the landing record every entry point keeps.
* ``test_stale_validation``: split refuses a table the last validation did not judge.
* ``test_retrain_bookkeeping``: what the retrain flow records is true of its run (a batch
  whose rows were all ingested is a skip; rows ingested outside the flow are retrained on; no
  earlier decision is passed off as the run's).
* ``test_killed_run``: kill -9 leaves MLflow runs and Optuna trials RUNNING and a temporary
  file in ``data/raw/``; the next start ends and removes them, and only those.
* ``test_flow_start``: two flows starting together on a fresh Prefect home.
* ``test_fault_messages``: one message, no traceback, for faults of input or environment
  through ``python -m tabreg`` and both flows (``-v`` for the traceback).
* ``test_store``: a deleted, emptied, truncated or garbage ``mlflow.db``, or a store without
  the champion the ledger records, named at ``status``, ``promote``, ``register`` and the
  flows' preflight, never re-created; backup, wipe, restore and serve the same champion (and
  ``/health`` degraded meanwhile); restore refusing newer data unless forced.
* ``test_earlier_data``: ``evaluate-version`` scores a version on an earlier data version's
  test split through DVC, the working tree untouched; a missing revision or data version.

Add a fault where its family lives; a new family gets its own module.
"""
