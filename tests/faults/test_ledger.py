"""The decision ledger after a crash mid-write: a torn last line is reported and skipped by
the reader (``status`` keeps working), and the next decision starts on a line of its own."""

from __future__ import annotations

import json
import logging

from tabreg.promotion import registry


def test_a_torn_last_line_is_reported_skipped_and_not_glued_to(tmp_path, caplog):
    ledger = tmp_path / "registry" / "ledger.jsonl"
    registry.record(ledger, {"action": "promote", "challenger": "1"})
    whole = ledger.read_bytes()
    torn = json.dumps({"action": "promote", "challenger": "2", "reasons": ["x" * 50]})
    ledger.write_bytes(whole + torn[:37].encode())  # the crash cut the line short

    with caplog.at_level(logging.WARNING, logger="tabreg.promotion.registry"):
        assert [e["challenger"] for e in registry.read_ledger(ledger)] == ["1"]
    assert f"{ledger}, line 2: not a whole ledger entry" in caplog.text

    registry.record(ledger, {"action": "rollback", "challenger": "3"})
    lines = ledger.read_text().splitlines()
    assert len(lines) == 3 and lines[1] == torn[:37]
    assert json.loads(lines[2])["action"] == "rollback"
    assert [e["challenger"] for e in registry.read_ledger(ledger)] == ["1", "3"]
    assert [e["challenger"] for e in registry.read_ledger(ledger, last=1)] == ["3"]


def test_entries_are_whole_lines(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    for i in range(3):
        registry.record(ledger, {"action": "skip", "n": i, "text": "line\nbreak"})
    data = ledger.read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 3
    assert [e["n"] for e in registry.read_ledger(ledger)] == [0, 1, 2]


def test_status_survives_a_torn_ledger(make_project, capsys, caplog):
    from tabreg import cli

    root = make_project(rows=1000)
    ledger = root / "registry" / "ledger.jsonl"
    ledger.parent.mkdir()
    # A decision that needs no model (a store check may rightly refuse a promotion it lacks).
    ledger.write_text('{"action": "skip", "reasons": ["no new data"], "at": "2026-11-01"}\n'
                      '{"act')
    with caplog.at_level(logging.WARNING, logger="tabreg.promotion.registry"):
        code = cli.run(["--root", str(root), "status"])
    assert code == 0, capsys.readouterr().err
    assert "2026-11-01 skip: no new data" in capsys.readouterr().out
    assert "line 2: not a whole ledger entry" in caplog.text
