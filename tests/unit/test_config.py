import pytest
import yaml

from tabreg.config import load_config, parse_config
from tabreg.errors import ConfigError
from tests.conftest import ROOT


def tree() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_load_frozen():
    config = load_config(ROOT / "params.yaml", env={})
    assert config.schema.target == "median_house_value"
    assert config.split.strata.bins[-1] == float("inf")
    with pytest.raises(Exception, match="frozen"):
        config.split.test_size = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t["split"].update(tets_size=0.3), r"split\.tets_size: unknown key"),
        (lambda t: t["split"].update(test_size="big"), r"split\.test_size: .*valid number"),
        (lambda t: t["split"].update(test_size=1.5), r"split\.test_size: .*less than 1"),
        (lambda t: t["split"].update(strategy="kfold"), r"split\.strategy: .*'hash' or 'random'"),
        (lambda t: t["split"]["strata"].update(bins=[0, 3, 1.5]), r"split\.strata: .*increase"),
        (lambda t: t["split"]["strata"].update(column="income"),
         r"split\.strata\.column: 'income'"),
        (lambda t: t["data"].update(sha256="abc"), r"data\.sha256: .*pattern"),
        (lambda t: t["data"].pop("member"), r"data\.member: required key is missing"),
        (lambda t: t["schema"].update(categorical=["longitude"]), r"'longitude' is listed twice"),
        (lambda t: t.update(extra={"a": 1}), r"extra: unknown key"),
        (lambda t: t["evaluate"]["slices"][1].update(column="x"), r"slices\.1\.column: 'x'"),
        (lambda t: t["evaluate"]["error_map"].update(latitude="lat"),
         r"evaluate\.error_map\.latitude: 'lat'"),
        (lambda t: t["data"].update(duplicates="ignore"),
         r"data\.duplicates: .*'reject', 'drop' or 'keep'"),
        (lambda t: t["problem"].update(rows=""), r"problem\.rows: .*at least 1"),
        (lambda t: t["tune"].update(launcher="inline", workers=2),
         r"tune: .*2 workers, but launcher 'inline' runs the trials .* one at a time"),
    ],
)
def test_bad_config_names_the_key(mutate, message):
    t = tree()
    mutate(t)
    with pytest.raises(ConfigError, match=message):
        parse_config(t, env={})


def test_the_problem_in_words_has_neutral_defaults():
    """A params.yaml without ``problem:`` gets no housing words, and no housing features."""
    t = tree()
    for key in ("problem", "features"):
        del t[key]
    t["tune"]["space"].pop("features")
    t["evaluate"].pop("error_map")
    config = parse_config(t, env={})
    assert config.problem.target is None and config.problem.unit == ""
    assert config.problem.rows == "rows" and not config.problem.limitations
    assert config.features.geo is None and config.evaluate.error_map is None
    housing = load_config(ROOT / "params.yaml", env={}).problem
    assert housing.unit == "$" and "California" in housing.target


def test_env_overrides_only_the_data_source():
    config = parse_config(tree(), env={"DATA_SOURCE": "/data/h.tgz", "SPLIT_SEED": "3"})
    assert config.data.source == "/data/h.tgz"
    assert config.split.seed == 42


def test_a_relative_data_source_names_the_file_from_where_it_was_given(tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_config(tree(), env={"DATA_SOURCE": "../shared/h.tgz"})
    assert config.data.source == str((tmp_path / "../shared/h.tgz").resolve())
    kept = parse_config(tree(), env={"DATA_SOURCE": "https://example.org/h.tgz"})
    assert kept.data.source == "https://example.org/h.tgz"


def test_the_make_front_door_resolves_a_relative_data_source_once(tmp_path):
    import subprocess

    from tests.conftest import ROOT

    done = subprocess.run(["make", "-s", "-C", str(ROOT), "-f", "Makefile", "--eval",
                           "show: ; @echo $$DATA_SOURCE", "show",
                           "DATA_SOURCE=../shared/datasets/housing.tgz"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout.strip() == str(ROOT.parent / "shared/datasets/housing.tgz")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("split: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
