"""Request bodies too wide to parse cheaply: a CSV body is capped at the same number of
columns as a JSON one (``serving.MAX_COLUMNS``), refused from its header alone."""

from __future__ import annotations

import time

from tabreg.serving.server import MAX_COLUMNS


def test_a_csv_body_with_too_many_columns_is_refused_quickly(http):
    n = 100_000
    body = (",".join(f"c{i}" for i in range(n)) + "\n" + ",".join(["1"] * n) + "\n").encode()
    started = time.perf_counter()
    answer = http.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"] == f"text/csv: more than {MAX_COLUMNS} columns ({n})"
    assert time.perf_counter() - started < 2


def test_a_csv_body_at_the_cap_is_judged_on_its_columns(http):
    body = (",".join(f"c{i}" for i in range(MAX_COLUMNS)) + "\n"
            + ",".join(["1"] * MAX_COLUMNS) + "\n").encode()
    answer = http.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    assert answer.status_code == 422 and "missing column" in answer.text
