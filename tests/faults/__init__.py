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

Add a fault where its family lives; a new family gets its own module.
"""
