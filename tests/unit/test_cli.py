"""The command line: errors from input are one message and a non-zero exit, no traceback."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, set_params


def cli(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tabreg", *args], cwd=cwd, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")})


def in_process(*args: str) -> int:
    """What ``python -m tabreg`` runs, in this process: for the tests where a process each
    would only add start-up (Great Expectations alone is about 6 s to import)."""
    from tabreg import cli as command_line

    return command_line.run(list(args))


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


def test_steps_run_from_the_cli(make_project, capsys):
    root = make_project(rows=1500)
    for step in ("ingest", "validate", "split"):
        capsys.readouterr()
        assert in_process("--root", str(root), step) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["rows"]["total"] == 1500


@pytest.mark.parametrize("suite", ["batch", "raw"])
def test_check_file(tmp_path, suite, capsys):
    def tabreg(*args: str) -> int:
        return in_process("--root", str(ROOT), *args)

    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    assert tabreg("generate", "--rows", "1200", "--out", str(good)) == 0
    text = good.read_text().splitlines()
    fields = text[5].split(",")
    fields[7] = "99.0"  # median_income above its cap
    bad.write_text("\n".join(text[:5] + [",".join(fields)] + text[6:]) + "\n")
    assert tabreg("check-file", str(good), "--suite", suite) == 0
    capsys.readouterr()
    assert tabreg("check-file", str(bad), "--suite", suite) == 1
    err = capsys.readouterr().err
    assert "median_income" in err and "99" in err and "Traceback" not in err


def test_new_batch_refuses_another_problems_schema(tmp_path):
    """The demonstration batches are rows of the default problem: in a project with another
    schema (the README's worked example) they would only be quarantined, so say so at once."""
    import yaml

    from tests.another_problem import readme_example

    tree = {**yaml.safe_load((ROOT / "params.yaml").read_text()), **readme_example()}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    done = cli("--root", str(tmp_path), "new-batch", "--rows", "10")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "not of this one" in done.stderr and "'duration_min'" in done.stderr
    assert not (tmp_path / "data/landing").exists()


def test_generate_archive_prints_its_checksum(tmp_path):
    done = cli("generate", "--rows", "300", "--out", str(tmp_path / "h.tgz"))
    assert done.returncode == 0
    from tabreg.data.source import sha256_of

    assert json.loads(done.stdout)["sha256"] == sha256_of(tmp_path / "h.tgz")


def test_help_texts_are_plain_and_every_command_says_what_it_does():
    top = cli("--help")
    assert top.returncode == 0 and "``" not in top.stdout
    assert "python -m tabreg: the command line" in " ".join(top.stdout.split())
    tune = cli("tune", "--help")
    assert "Optuna study" in tune.stdout and "resumes" in tune.stdout
    from tabreg.cli import _parser

    commands = next(a for a in _parser()._actions if a.dest == "command").choices
    assert not [name for name, parser in commands.items() if not parser.description]


def test_make_help_into_a_pipe_is_plain_text_with_values():
    done = subprocess.run(["make", "--no-print-directory", "help", "UI_PORT=5123"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "\033" not in done.stdout and "$(" not in done.stdout
    assert "http://127.0.0.1:5123" in done.stdout
    assert done.stdout.splitlines()[0].split() == ["help", "list", "the", "targets"]
