"""dvc.yaml's code dependencies cover every module each stage imports, so neither driver can
run a stage on stale code: a new import in a step without its line in dvc.yaml fails here."""

import ast
from pathlib import Path

import pytest
import yaml

from tabreg import steps
from tests.conftest import ROOT

SRC = ROOT / "src"


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _import_names(nodes) -> set[str]:
    names: set[str] = set()
    for node in (n for root in nodes for n in ast.walk(root)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules(names: set[str]) -> set[Path]:
    """The project's module files for imported ``names``, with the packages they run on the
    way (``tabreg.a.b`` runs ``tabreg/a/__init__.py`` first)."""
    found = set()
    for name in (n for n in names if n == "tabreg" or n.startswith("tabreg.")):
        parts = name.split(".")
        for depth in range(2, len(parts) + 1):
            module = _module_file(".".join(parts[:depth]))
            if module is not None:
                found.add(module)
    return found


def _imported(path: Path) -> set[Path]:
    """The project's modules that ``path`` imports anywhere (inside functions too: the steps
    import their libraries where they are used)."""
    return _modules(_import_names([ast.parse(path.read_text(), filename=str(path))]))


def imports_of(path: Path, *, roots: set[Path] | None = None) -> set[Path]:
    """``path`` (or ``roots``) and every project module reached from it through imports."""
    seen: set[Path] = set()
    todo = list(roots) if roots is not None else [path]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(_imported(current) - seen)
    return seen


def step_imports(stage: str) -> set[Path]:
    """What the step of ``stage`` imports: its module's top level, the step function and
    the module's functions it calls (a step module may hold several steps), then everything
    those modules import."""
    path = steps.module_file(stage)
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    reached, todo = set(), [stage]
    while todo:
        name = todo.pop()
        if name in reached or name not in functions:
            continue
        reached.add(name)
        todo.extend(n.func.id for n in ast.walk(functions[name])
                    if isinstance(n, ast.Call) and isinstance(n.func, ast.Name))
    direct = _modules(_import_names(top + [functions[n] for n in reached]))
    return {path} | imports_of(path, roots=direct)


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _covered(module: Path, deps: list[str]) -> bool:
    relative = module.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", steps.STEP_NAMES)
def test_each_stage_declares_every_module_its_step_imports(stage):
    spec = _stages()[stage]
    assert spec["cmd"].split()[-1] == stage
    deps = [d for d in spec["deps"] if isinstance(d, str) and d.startswith("src/")]
    needed = step_imports(stage) | imports_of(SRC / "tabreg" / "config.py")
    needed.discard(SRC / "tabreg" / "__init__.py")
    missing = sorted(m.relative_to(ROOT).as_posix() for m in needed if not _covered(m, deps))
    assert not missing, f"dvc.yaml stage {stage!r} misses code deps: {missing}"


def test_the_import_scan_sees_imports_inside_functions_and_only_the_steps_own():
    tuning = SRC / "tabreg" / "tuning" / "coordinator.py"
    assert tuning in step_imports("tune")
    assert tuning not in step_imports("features")
