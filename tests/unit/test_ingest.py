"""Ingest: sources, archives, CSV structure, identity and appends; every bad input is refused
with a message naming the problem, and the previous good output is left as it was."""

import io
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from tabreg.config import BATCH, ROW_ID, load_config
from tabreg.data import archive, ingest, source, synthetic
from tabreg.data.landing import BatchRejected
from tabreg.errors import ArchiveError, SchemaError, SourceError
from tabreg.steps import ingest as steps
from tests.conftest import ROOT, set_params

SCHEMA = load_config(ROOT / "params.yaml", env={}).schema


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def good_csv(tmp_path: Path, rows: int = 50, seed: int = 0) -> Path:
    path = tmp_path / "good.csv"
    synthetic.write_csv(synthetic.generate(rows, seed=seed), path)
    return path


def tarball(path: Path, members: list[tarfile.TarInfo], data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(data) if m.isfile() else None)
    return path


# --- sources -------------------------------------------------------------------------------

def test_checksum_mismatch_extracts_nothing(tmp_path):
    f = write(tmp_path / "h.tgz", "not the data")
    with pytest.raises(SourceError,
                       match=r"checksum mismatch.*expected sha256 0{64}.*data\.sha256"):
        source.fetch(str(f), "0" * 64, root=tmp_path, cache_dir=tmp_path / "c")


def test_file_url_and_relative_path_are_the_same_source(tmp_path):
    f = write(tmp_path / "h.tgz", "payload")
    sha = source.sha256_of(f)
    assert source.fetch(f.as_uri(), sha, root=tmp_path, cache_dir=tmp_path) == f
    assert source.fetch("h.tgz", sha, root=tmp_path, cache_dir=tmp_path) == f


def test_unreachable_url_names_url_and_override(tmp_path):
    url = "http://127.0.0.1:9/housing.tgz"  # nothing listens on the discard port
    with pytest.raises(SourceError, match=r"cannot download http://127\.0\.0\.1:9/housing\.tgz"
                                          r".*DATA_SOURCE"):
        source.fetch(url, "0" * 64, root=tmp_path, cache_dir=tmp_path / "c", timeout=5)


def test_missing_local_source_and_unknown_scheme(tmp_path):
    with pytest.raises(SourceError, match=r"not found.*DATA_SOURCE"):
        source.fetch(str(tmp_path / "nope.tgz"), "0" * 64, root=tmp_path, cache_dir=tmp_path)
    with pytest.raises(SourceError, match="unsupported scheme 'ftp'"):
        source.fetch("ftp://x/h.tgz", "0" * 64, root=tmp_path, cache_dir=tmp_path)


# --- archives ------------------------------------------------------------------------------

def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, (1 if kind == tarfile.REGTYPE else 0)
    return info


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (member("../evil.csv"), r"path traversal"),
        (member("/etc/evil.csv"), r"absolute path"),
        (member("housing/link", tarfile.SYMTYPE, "/etc/passwd"), r"link to '/etc/passwd'"),
        (member("housing/hard", tarfile.LNKTYPE, "housing/housing.csv"), r"link to"),
        (member("housing/dev", tarfile.CHRTYPE), r"device"),
        (member("housing/fifo", tarfile.FIFOTYPE), r"device or special"),
    ],
)
def test_unsafe_archives_are_refused_whole(tmp_path, bad, reason):
    arc = tarball(tmp_path / "a.tgz", [member("housing/housing.csv"), bad])
    dest = tmp_path / "out" / "member.csv"
    with pytest.raises(ArchiveError, match=rf"unsafe member .*\({reason}"):
        archive.extract_member(arc, "housing/housing.csv", dest)
    assert not dest.exists()
    assert not (tmp_path / "evil.csv").exists()


def test_truncated_archive(tmp_path):
    full = tmp_path / "full.tgz"
    synthetic.write_archive(synthetic.generate(2000), full)
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        archive.extract_member(cut, "housing/housing.csv", tmp_path / "m.csv")


def test_missing_member_lists_what_is_there(tmp_path):
    arc = tarball(tmp_path / "a.tgz", [member("other/data.csv")])
    with pytest.raises(ArchiveError, match=r"no member 'housing/housing.csv'.*other/data\.csv"):
        archive.extract_member(arc, "housing/housing.csv", tmp_path / "m.csv")


def test_extracts_the_member(tmp_path):
    frame = synthetic.generate(30)
    arc = tmp_path / "h.tgz"
    synthetic.write_archive(frame, arc)
    out = archive.extract_member(arc, "housing/housing.csv", tmp_path / "x" / "m.csv")
    pd.testing.assert_frame_equal(ingest.read_csv(out, SCHEMA), frame[list(SCHEMA.columns)],
                                  check_exact=False)


# --- CSV structure -------------------------------------------------------------------------

def header() -> str:
    return ",".join(SCHEMA.columns)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"bad\.csv: file is empty"),
        (header() + "\n", r"bad\.csv: the file has a header but no rows"),
        (header().replace(",", ";") + "\n1;2\n", r"delimited by ';'"),
        (header() + ",extra\n", r"unexpected columns \['extra'\]"),
        (header().replace(",households", "") + "\n", r"missing columns \['households'\]"),
        (header().replace("households", "hh") + "\n",
         r"missing columns \['households'\], unexpected columns \['hh'\], \(renamed columns\?\)"),
    ],
)
def test_structural_problems(tmp_path, text, message):
    with pytest.raises(SchemaError, match=message):
        ingest.read_csv(write(tmp_path / "bad.csv", text), SCHEMA)


def test_text_in_numeric_columns_names_column_line_and_value(tmp_path):
    frame = synthetic.generate(20).astype({"total_rooms": "str", "median_income": "str"})
    frame.loc[3, "total_rooms"] = "lots"
    frame.loc[7, "median_income"] = "n/a?"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(SchemaError, match=r"column 'total_rooms': 1 non-numeric values \(line 5: "
                                          r"'lots'\); column 'median_income'.*line 9: 'n/a\?'"):
        ingest.read_csv(path, SCHEMA)


def test_columns_in_another_order_are_accepted(tmp_path):
    frame = synthetic.generate(20)
    path = tmp_path / "b.csv"
    frame[list(reversed(frame.columns))].to_csv(path, index=False)
    pd.testing.assert_frame_equal(ingest.read_csv(path, SCHEMA), frame[list(SCHEMA.columns)],
                                  check_exact=False)


def with_repeats(rows: int = 10, seed: int = 0) -> pd.DataFrame:
    """``rows`` generated rows, then rows 2 and 5 again and row 2 a third time."""
    frame = synthetic.generate(rows, seed=seed)
    return pd.concat([frame, frame.iloc[[2, 5, 2]]], ignore_index=True)


def test_duplicated_rows_in_one_file(tmp_path):
    frame = with_repeats()
    with pytest.raises(SchemaError, match=r"f\.csv: 3 duplicated rows .*line 12 repeats line 4, "
                                          r"line 13 repeats line 7.*data\.duplicates is "
                                          r"'reject'.*'keep'.*'drop'"):
        ingest.with_identity(frame, SCHEMA, "f.csv")
    with pytest.raises(SchemaError, match=r"the same 'median_income'.*data\.duplicates"):
        ingest.with_identity(frame, SCHEMA, "f.csv", "median_income", "reject")


def test_duplicates_drop_keeps_the_first_of_each():
    frame = with_repeats()
    plain = ingest.with_identity(frame.iloc[:10], SCHEMA, "f.csv")
    dropped = ingest.with_identity(frame, SCHEMA, "f.csv", duplicates="drop")
    pd.testing.assert_frame_equal(dropped, plain)  # the same rows, the same identities
    table, infos = ingest.append_batches(dropped, [])
    assert len(table) == 10
    assert (infos[0].rows_read, infos[0].rows_added, infos[0].repeated_rows) == (13, 10, 3)


def test_duplicates_keep_gives_each_repeat_its_own_identity():
    frame = with_repeats()
    plain = ingest.with_identity(frame.iloc[:10], SCHEMA, "f.csv")
    kept = ingest.with_identity(frame, SCHEMA, "f.csv", duplicates="keep")
    assert len(kept) == 13 and kept[ROW_ID].is_unique
    # first occurrences keep the identity they would have without repeats, and the numbering
    # by occurrence is stable: the same file gives the same identities again
    assert kept[ROW_ID].iloc[:10].tolist() == plain[ROW_ID].tolist()
    again = ingest.with_identity(frame, SCHEMA, "f.csv", duplicates="keep")
    assert again[ROW_ID].tolist() == kept[ROW_ID].tolist()
    # a later batch adds a repeated row only beyond the occurrences the table holds
    row2 = frame.iloc[[2]]
    once = ingest.with_identity(row2, SCHEMA, "b1.csv", duplicates="keep")
    four = ingest.with_identity(pd.concat([row2] * 4, ignore_index=True), SCHEMA, "b2.csv",
                                duplicates="keep")
    table, infos = ingest.append_batches(kept, [once, four])
    assert len(table) == 14 and table[ROW_ID].is_unique
    assert [(i.rows_added, i.rows_already_present, i.repeated_rows) for i in infos] == [
        (13, 0, 3), (0, 1, 0), (1, 3, 3)]


def test_append_drops_rows_already_present_and_keeps_order():
    base = ingest.with_identity(synthetic.generate(100, seed=1), SCHEMA, "base")
    new = synthetic.generate(40, seed=2)
    batch_frame = pd.concat([new, synthetic.generate(100, seed=1).iloc[:10]], ignore_index=True)
    batch = ingest.with_identity(batch_frame, SCHEMA, "b1.csv")
    table, infos = ingest.append_batches(base, [batch])
    assert len(table) == 140 and table[ROW_ID].is_unique
    assert table[ROW_ID].iloc[:100].tolist() == base[ROW_ID].tolist()
    assert table[BATCH].iloc[100:].eq("b1.csv").all()
    assert [(i.rows_read, i.rows_added, i.rows_already_present) for i in infos] == [
        (100, 100, 0), (50, 40, 10)]


# --- the step: outputs are atomic ------------------------------------------------------------

def test_bad_batch_leaves_previous_raw_table_untouched(make_project):
    root = make_project(rows=1500)
    config = load_config(root / "params.yaml", env={})
    steps.ingest(config, root)
    raw = root / config.paths.raw
    before = raw.read_bytes()
    write(root / "data/landing/2026-01-bad.csv", header().replace(",", ";") + "\n")
    with pytest.raises(BatchRejected, match=r"2026-01-bad\.csv: .*delimited by ';'"):
        steps.ingest(config, root)  # refused, and moved to the quarantine with its reason
    assert raw.read_bytes() == before
    assert not (root / "data/landing/2026-01-bad.csv").exists()
    assert not [p for p in raw.parent.iterdir() if p.name.endswith(".tmp")]


def test_step_follows_the_duplicates_policy(make_project):
    root = make_project(rows=1500)
    repeats = with_repeats(300, seed=9)
    synthetic.write_csv(repeats, root / "data/landing/2026-03.csv")
    set_params(root, "data", duplicates="keep")
    result = steps.ingest(load_config(root / "params.yaml", env={}), root)
    assert result["rows"] == 1803
    assert result["batches"][1] == {"name": "2026-03.csv", "rows_read": 303, "rows_added": 303,
                                    "rows_already_present": 0, "repeated_rows": 3}
    # the default refuses such a file, and says which setting would take it
    set_params(root, "data", duplicates="reject")
    synthetic.write_csv(repeats, root / "data/landing/2026-04.csv")
    with pytest.raises(BatchRejected, match=r"2026-04\.csv: 3 duplicated rows.*data\.duplicates"):
        steps.ingest(load_config(root / "params.yaml", env={}), root)


def test_a_plain_csv_source_needs_no_member_but_an_archive_does(make_project, tmp_path):
    from tabreg.errors import ConfigError

    root = make_project(rows=1200)
    set_params(root, "data", member=None)
    with pytest.raises(ConfigError, match=r"data\.member: housing\.tgz is an archive"):
        steps.ingest(load_config(root / "params.yaml", env={}), root)
    csv = good_csv(tmp_path, rows=1200)
    set_params(root, "data", source=str(csv), sha256=source.sha256_of(csv))
    assert steps.ingest(load_config(root / "params.yaml", env={}), root)["rows"] == 1200


def test_step_appends_landing_batches(make_project):
    root = make_project(rows=1500)
    synthetic.write_csv(synthetic.generate(300, seed=9), root / "data/landing/2026-02.csv")
    set_params(root, "data", id_column=None)
    result = steps.ingest(load_config(root / "params.yaml", env={}), root)
    assert result["rows"] == 1800
    assert [b["name"] for b in result["batches"]][1:] == ["2026-02.csv"]
