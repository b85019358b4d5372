"""The command line: errors from input are one message and a non-zero exit, no traceback."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, set_params


def cli(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tabreg", *args], cwd=cwd, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")})


def test_bad_config_exits_2_with_the_key(make_project):
    root = make_project(rows=1200)
    set_params(root, "split", test_size=2)
    done = cli("--root", str(root), "split")
    assert done.returncode == 2
    assert "split.test_size" in done.stderr and "Traceback" not in done.stderr


def test_missing_source_names_it_and_the_override(make_project):
    root = make_project(rows=1200)
    set_params(root, "data", source="nowhere/housing.tgz")
    done = cli("--root", str(root), "ingest")
    assert done.returncode == 1
    assert "nowhere/housing.tgz not found" in done.stderr and "DATA_SOURCE" in done.stderr
    assert "Traceback" not in done.stderr


def test_steps_run_from_the_cli(make_project):
    root = make_project(rows=1500)
    for step in ("ingest", "validate", "split"):
        done = cli("--root", str(root), step)
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"]["total"] == 1500


@pytest.mark.parametrize("suite", ["batch", "raw"])
def test_check_file(tmp_path, suite):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    assert cli("generate", "--rows", "1200", "--out", str(good)).returncode == 0
    text = good.read_text().splitlines()
    fields = text[5].split(",")
    fields[7] = "99.0"  # median_income above its cap
    bad.write_text("\n".join(text[:5] + [",".join(fields)] + text[6:]) + "\n")
    assert cli("check-file", str(good), "--suite", suite).returncode == 0
    done = cli("check-file", str(bad), "--suite", suite)
    assert done.returncode == 1
    assert "median_income" in done.stderr and "99" in done.stderr


def test_generate_archive_prints_its_checksum(tmp_path):
    done = cli("generate", "--rows", "300", "--out", str(tmp_path / "h.tgz"))
    assert done.returncode == 0
    from tabreg.data.source import sha256_of

    assert json.loads(done.stdout)["sha256"] == sha256_of(tmp_path / "h.tgz")
