"""The registry and the gate against a real MLflow store: first champion, promotion,
keeping the champion, refusal, rollback, and the faults (no challenger, dangling alias)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from tabreg.config import load_config
from tabreg.data import synthetic
from tabreg.errors import TabregError
from tabreg.models.candidates import Candidate, make_pipeline
from tabreg.promotion import registry
from tabreg.promotion.registry import CHALLENGER, CHAMPION, RegistryError
from tabreg.steps import champion
from tabreg.steps import register as steps
from tests.conftest import PER_MACHINE, ROOT
from tests.scoring_helpers import isolated_mlflow, register_by_hand, write_test_split_and_store

pytestmark = pytest.mark.integration

_PARAMS = load_config(ROOT / "params.yaml", env={})
#: Any first model may become champion here; the bar itself has its own test.
CONFIG = _PARAMS.model_copy(update={"promotion": _PARAMS.promotion.model_copy(
    update={"max_rmse": 1e9})})
NAME = CONFIG.registry.model_name
STRONG = Candidate("hist_gradient_boosting", {"n_clusters": 5}, {"max_iter": 80})
WEAK = Candidate("hist_gradient_boosting", {"n_clusters": 5}, {"max_iter": 3})


@pytest.fixture(scope="module")
def fitted():
    frame = synthetic.generate(3000, seed=11)
    y = frame.pop(CONFIG.schema.target).to_numpy(dtype=float)
    return {name: make_pipeline(c, CONFIG, n_jobs=1).fit(frame, y)
            for name, c in (("strong", STRONG), ("weak", WEAK))}


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    for var in PER_MACHINE:
        monkeypatch.delenv(var, raising=False)
    return write_test_split_and_store(tmp_path, CONFIG)


def register(root: Path, model, **tags: str) -> str:
    return register_by_hand(root, CONFIG, model, **tags)


def aliases(root: Path) -> dict[str, str | None]:
    client = registry.client(CONFIG, root)
    versions = {a: registry.alias_version(client, NAME, a) for a in (CHAMPION, CHALLENGER)}
    return {a: v and str(v.version) for a, v in versions.items()}


def ledger(root: Path) -> list[dict]:
    return registry.read_ledger(root / CONFIG.registry.ledger)


def test_promotion_history_and_rollback(project, fitted):
    v1 = register(project, fitted["weak"])
    first = steps.gate(CONFIG, project, trigger="test")
    assert first["action"] == "promote" and "no champion yet" in first["reasons"][0]
    assert aliases(project) == {CHAMPION: v1, CHALLENGER: v1}
    # No tag stands for evidence that does not exist (no champion to compare with), and the
    # version says in its description what the gate decided and why.
    first_version = registry.client(CONFIG, project).get_model_version(NAME, v1)
    assert {"gate.champion_rmse", "gate.champion_version", "gate.difference", "gate.slices",
            registry.PREVIOUS_TAG}.isdisjoint(first_version.tags)
    assert all(value != "" for value in first_version.tags.values()), first_version.tags
    assert first_version.description.startswith(f"{NAME} version {v1}: a ")
    assert "The gate (test) made it champion: no champion yet" in first_version.description
    shown = champion.status_text(champion.status(CONFIG, project))  # one version, said once
    assert f"challenger the champion itself (version {v1})" in shown
    assert shown.count(f"version {v1}") == 2, shown  # the champion line and that line

    v2 = register(project, fitted["strong"])
    assert aliases(project) == {CHAMPION: v1, CHALLENGER: v2}
    second = steps.gate(CONFIG, project, trigger="test")
    assert second["action"] == "promote", second["reasons"]
    evidence = second["evidence"]
    assert evidence["challenger_rmse"] < evidence["champion_rmse"]
    assert evidence["difference"]["high"] < 0
    assert {r["slice"] for r in evidence["slices"]} == {s.name for s in CONFIG.evaluate.slices}
    assert aliases(project)[CHAMPION] == v2

    client = registry.client(CONFIG, project)
    tags = client.get_model_version(NAME, v2).tags
    assert tags["gate.outcome"] == "promote" and tags[registry.PREVIOUS_TAG] == v1
    assert f"made it champion, replacing version {v1}: RMSE" in \
        client.get_model_version(NAME, v2).description
    assert float(tags["gate.champion_rmse"]) == pytest.approx(evidence["champion_rmse"])
    decision = json.loads((project / "reports/promotion.json").read_text())
    assert decision["challenger"] == v2 and decision["champion"] == v1

    again = steps.gate(CONFIG, project, trigger="test")  # nothing new to judge
    assert again["action"] == "none"

    back = champion.rollback(CONFIG, project)
    assert (back["champion"], back["to"]) == (v2, v1)
    assert aliases(project)[CHAMPION] == v1
    assert [e["action"] for e in ledger(project)] == ["promote", "promote", "none", "rollback"]
    assert all(e["by"] and e["at"] for e in ledger(project))
    with pytest.raises(RegistryError, match="first champion"):
        champion.rollback(CONFIG, project)
    assert aliases(project)[CHAMPION] == v1

    shown = champion.status_text(champion.status(CONFIG, project))
    assert f"champion   version {v1}" in shown and "rollback" in shown


def test_a_worse_challenger_leaves_the_champion(project, fitted):
    v1 = register(project, fitted["strong"])
    steps.gate(CONFIG, project, trigger="test")
    v2 = register(project, fitted["weak"])
    decision = steps.gate(CONFIG, project, trigger="test")
    assert decision["action"] == "keep champion"
    assert aliases(project) == {CHAMPION: v1, CHALLENGER: v2}
    judged = registry.client(CONFIG, project).get_model_version(NAME, v2)
    tags = judged.tags
    assert tags["gate.outcome"] == "keep" and "promotion needs" in tags["gate.reasons"]
    assert f"The gate (test) kept version {v1} as champion: " in judged.description


def test_another_stores_registry_uri_is_not_used(project, fitted, tmp_path_factory):
    """One process may open two stores (the tests do; so does a notebook): the registry
    of the store opened last receives its versions and serves its aliases."""
    other = write_test_split_and_store(tmp_path_factory.mktemp("other"), CONFIG)
    elsewhere = register(other, fitted["weak"])
    steps.gate(CONFIG, other, trigger="test")
    with isolated_mlflow():
        mlflow.set_registry_uri(f"sqlite:///{other / 'mlflow.db'}")
        v1 = register(project, fitted["strong"])
        assert steps.gate(CONFIG, project, trigger="test")["action"] == "promote"
        assert v1 == elsewhere == "1"
        assert aliases(project)[CHAMPION] == v1 and aliases(other)[CHAMPION] == elsewhere
        assert len(registry.client(CONFIG, other).search_model_versions(f"name='{NAME}'")) == 1


def test_the_first_model_must_meet_the_bar(project, fitted):
    register(project, fitted["weak"])
    strict = CONFIG.model_copy(update={"promotion": CONFIG.promotion.model_copy(
        update={"max_rmse": 1000.0})})
    decision = steps.gate(strict, project, trigger="test")
    assert decision["action"] == "keep champion" and aliases(project)[CHAMPION] is None


def test_a_random_split_champion_from_other_data_is_not_compared(project, fitted):
    book = CONFIG.model_copy(update={"split": CONFIG.split.model_copy(
        update={"strategy": "random"})})
    register(project, fitted["weak"], split_signature=registry.split_signature(book),
             data_version="an-older-version")
    steps.gate(book, project, trigger="test")
    v2 = register(project, fitted["strong"])
    decision = steps.gate(book, project, trigger="test")
    assert decision["action"] == "refuse"
    assert "the data changed since the champion was trained" in decision["reasons"][0]
    assert aliases(project)[CHAMPION] != v2


def test_faults_give_clear_errors_and_leave_the_aliases(project, fitted):
    with pytest.raises(RegistryError, match="no challenger"):
        steps.gate(CONFIG, project, trigger="test")
    with pytest.raises(RegistryError, match="no champion"):
        champion.rollback(CONFIG, project)
    v1 = register(project, fitted["strong"])
    steps.gate(CONFIG, project, trigger="test")
    register(project, fitted["weak"])
    # The champion's files disappear (a wiped artifact store): its alias is dangling.
    client = registry.client(CONFIG, project)
    source = client.get_model_version(NAME, v1).source
    location = mlflow.MlflowClient().get_logged_model(source.split("/")[-1]).artifact_location
    shutil.rmtree(location.removeprefix("file://"))
    with pytest.raises(RegistryError, match=rf"champion {NAME} version {v1} .* cannot be loaded"):
        steps.gate(CONFIG, project, trigger="test")
    assert aliases(project)[CHAMPION] == v1  # nothing moved


def test_cli_reports_registry_errors_without_a_traceback(project, capsys):
    from tabreg.cli import run

    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    assert run(["--root", str(project), "promote"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no challenger" in err and "Traceback" not in err
    assert issubclass(RegistryError, TabregError)
