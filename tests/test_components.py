"""The components and pipelines against the core: their defaults are the core's, their READMEs
are generated from their docstrings, and each component is a thin wrapper over seals_al."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from components import readme
from pipelines.compile import pipelines as build_pipelines
from seals_al import settings
from seals_al.campaign import CampaignConfig
from seals_al.strategies import STRATEGIES

# Parameters whose default the simulation pipelines set differently from a campaign's, on purpose:
# they assume a labeled data set such as CLINC150.
SIMULATION = {
    "truth_column": settings.SIMULATION_TRUTH_COLUMN,
    "split_column": settings.SIMULATION_SPLIT_COLUMN,
}


def core_defaults() -> dict[str, object]:
    """Every setting's default as KFP spells it: "" for None (0 for an id); ``factory`` is the
    index factory."""
    config = CampaignConfig("c", "", settings.DataConfig(data="d"))
    flat = {k: ("" if v is None else v) for k, v in config.to_json().items()}
    flat = {k: v for k, v in flat.items() if k not in ("concept", "data", "seed_labels")}
    return {
        **flat,
        "factory": settings.DEFAULT_FACTORY,
        "layout": settings.LAYOUTS[0],
        "poll_seconds": settings.WAIT_POLL_SECONDS,
        "timeout_seconds": settings.WAIT_TIMEOUT_SECONDS,
    }


def test_the_strategy_registry_is_the_settings_list():
    assert tuple(STRATEGIES) == settings.STRATEGIES


@pytest.mark.parametrize("name", readme.names())
def test_component_defaults_are_the_cores(name):
    expected = core_defaults()
    inputs = readme.load(name).component_spec.inputs
    checked = {k: i.default for k, i in inputs.items() if k in expected and i.default is not None}
    assert checked == {k: expected[k] for k in checked}
    if name in ("init_campaign", "build_index"):
        assert checked, "these components take core settings"


@functools.cache
def pipelines() -> dict:
    """Every pipeline with the default cluster settings, built once for the checks that read them."""
    return build_pipelines()


@pytest.mark.parametrize("file", sorted(pipelines()))
def test_pipeline_defaults_are_the_cores(file):
    expected = core_defaults()
    if file in ("seals_simulation.yaml", "seals_many_concepts.yaml"):
        expected |= SIMULATION
    inputs = pipelines()[file].component_spec.inputs
    checked = {k: i.default for k, i in inputs.items() if k in expected and i.default is not None}
    assert checked == {k: expected[k] for k in checked}
    if file != "seals_one_round.yaml":  # that one takes only the campaign and a target
        assert {"strategy", "k", "batch_size", "index_factory"} <= set(checked)


def test_the_settings_names_are_one_vocabulary():
    """No setting name means two things: the data and learning settings never collide."""
    data = {f.name for f in fields(settings.DataConfig)}
    learning = {f.name for f in fields(settings.RoundConfig)}
    assert not data & learning
    assert {"concept", "seed_labels", "budget"}.isdisjoint(data | learning)


@pytest.mark.parametrize("name", readme.names())
def test_readme_is_generated_from_the_component(name):
    path = Path(readme.COMPONENTS) / name / "README.md"
    text = path.read_text()
    assert readme.START in text, f"{path}: run `python -m components.readme`"
    assert readme.render(name, text) == text, f"{path} is stale: run `python -m components.readme`"


def test_readme_generation_follows_the_docstring(monkeypatch):
    """A changed argument description shows up in the generated README."""
    component = readme.load("train")
    doc = component.python_func.__doc__
    monkeypatch.setattr(
        component.python_func, "__doc__", doc.replace("campaign_uri: the campaign", "campaign_uri: X")
    )
    assert "| campaign_uri | str |  | X (label_ingest must have staged the round). |" in readme.generated(
        "train"
    )


@pytest.mark.parametrize("name", readme.names())
def test_a_component_body_is_plumbing_over_the_core(name):
    """Every import in a component's body is from seals_al, the standard library or kfp, and the
    body is short: the logic lives in the core package."""
    source = (Path(readme.COMPONENTS) / name / "component.py").read_text()
    function = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef))
    modules = {
        (n.module or "").split(".")[0] for n in ast.walk(function) if isinstance(n, ast.ImportFrom)
    } | {a.name.split(".")[0] for n in ast.walk(function) if isinstance(n, ast.Import) for a in n.names}
    assert modules <= {"seals_al", "collections", "json"}, modules
    body = function.body[1:]  # after the docstring
    assert body[-1].end_lineno - body[0].lineno < 40


def test_the_core_never_imports_kfp_components_or_pipelines():
    """seals_al is the layer below components/ and pipelines/: no module of it imports them or kfp."""
    core = Path(readme.COMPONENTS).parent / "seals_al"
    offenders = []
    for path in sorted(core.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in ("kfp", "components", "pipelines")
            ]
    assert offenders == []


def test_stages_that_do_not_fit_do_not_import_scikit_learn():
    """Importing the campaign, report, oracle, CLI and round engine (what every stage process does)
    loads neither kfp, nor scikit-learn (over a second to import), nor SciPy; only fitting and
    evaluating do."""
    code = (
        "import sys\n"
        "import seals_al.campaign, seals_al.cli, seals_al.labeltools.oracle, seals_al.report\n"
        "import seals_al.round\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kfp', 'scipy', 'sklearn'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    # What ingest, report, status and wait use: the campaign and the prepared data, without the
    # round engine, faiss or scipy.
    code = (
        "import sys\n"
        "import seals_al.campaign, seals_al.dataset, seals_al.report, seals_al.labeltools.oracle\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'faiss', 'scipy', 'sklearn'}))\n"
        "print(sorted(m for m in sys.modules if m in ('seals_al.round', 'seals_al.pool')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "[]"]
