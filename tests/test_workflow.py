"""`spacy project run all` on tiny data with a tiny local BERT, then the package it builds."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import pytest
import srsly
from spacy.util import load_config, registry
from synthetic import make_sentences, to_conll
from util import build_nlp

from spacy_bert_ner.loggers import read_log
from spacy_bert_ner.pipeline_component import DEFAULT_MODEL

ROOT = Path(__file__).parent.parent
# Tiny-model training settings, passed the way spaCy reads config overrides from the environment.
# (The schedule's warmup and end follow the corpus and the project's max_epochs var.)
TRAIN_OVERRIDES = "--training.optimizer.learn_rate.initial_rate 0.001 --training.batcher.size 100"


def run(args: List[str], cwd: Path, env: Dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> Path:
    """A copy of the project with tiny CoNLL data, run once through the `all` workflow."""
    base = tmp_path_factory.mktemp("workflow")
    project_dir = base / "project"
    project_dir.mkdir()
    shutil.copy(ROOT / "project.yml", project_dir)
    shutil.copytree(ROOT / "configs", project_dir / "configs")
    (project_dir / "spacy_bert_ner").symlink_to(ROOT / "spacy_bert_ner")
    data = base / "data"
    data.mkdir()
    for split, n, seed in [("train", 80, 0), ("dev", 20, 1), ("test", 20, 2)]:
        (data / f"{split}.txt").write_text(to_conll(make_sentences(n, seed)), encoding="utf8")
    return project_dir


def project_run(project_dir: Path, tiny_bert: str, *args: str) -> str:
    data = project_dir.parent / "data"
    env = {**os.environ, "SPACY_CONFIG_OVERRIDES": TRAIN_OVERRIDES, "PIP_NO_INDEX": "1"}
    variables = {
        "train": data / "train.txt",
        "dev": data / "dev.txt",
        "test": data / "test.txt",
        "encoder": tiny_bert,
        "max_epochs": 10,
        "eval_frequency": 20,
        "n_sents": 1,
    }
    cli = [sys.executable, "-m", "spacy", "project", "run", *args, str(project_dir)]
    return run(cli + [f"--vars.{k}={v}" for k, v in variables.items()], project_dir, env)


@pytest.mark.workflow
def test_project_all_builds_an_installable_pipeline(project: Path, tiny_bert: str) -> None:
    output = project_run(project, tiny_bert, "all")
    # The project var max_epochs (10) sets the epochs, and the schedule follows the corpus.
    said = " ".join(output.split())  # wasabi wraps long lines
    match = re.search(r"decay to 0 at step (\d+) \(10 epochs x (\d+) batches\)", said)
    assert match and int(match[1]) == 10 * int(match[2]), said[-3000:]
    # `spacy train` filled the config's empty model blocks with the factory's default model.
    trained = load_config(project / "training" / "model-best" / "config.cfg")
    assert trained["components"]["bert_ner"]["model"] == DEFAULT_MODEL
    test_scores = json.loads((project / "metrics" / "test.json").read_text())
    assert test_scores["ents_f"] >= 0.9
    assert set(test_scores["ents_per_type"]) == {"PER", "ORG", "LOC"}
    assert test_scores["speed"] > 0
    # The error analysis scores dev as `spacy evaluate` does, and renders the errors.
    dev_scores = json.loads((project / "metrics" / "dev.json").read_text())
    analysis = json.loads((project / "metrics" / "errors" / "errors.json").read_text())
    assert analysis["scores"]["f"] == pytest.approx(100 * dev_scores["ents_f"], abs=0.01)
    assert "<html" in (project / "metrics" / "errors" / "errors.html").read_text()
    # The training log, the report drawn from it, and the model card.
    log = read_log(project / "training" / "log.jsonl")
    assert "spacy train configs/bert_ner.cfg" in log["command"] and log["seconds"] > 0
    assert [e["step"] for e in log["evaluations"]][:2] == [0, 20]
    report = (project / "metrics" / "report.html").read_text()
    assert report.count("src='data:image/png;base64,") == 4
    assert "<a href='errors/errors.html'>" in report and "Trained with" in report
    for figure in ("curve", "per_type", "confusion", "confidence"):
        assert (project / "metrics" / "report" / f"{figure}.png").stat().st_size > 10_000
    card = (project / "packages/en_bert_ner-0.1.0/README.md").read_text()
    per_type = test_scores["ents_per_type"]["PER"]
    per_row = f"| PER | {100 * per_type['p']:.2f} | {100 * per_type['r']:.2f} | "
    assert per_row in card
    assert "words/s (`spacy evaluate` on the test set, CPU" in card
    assert "SPACY_CONFIG_OVERRIDES=" in card and "python -m spacy train configs/" in card
    assert "### Known limits" in card and "train data: train.txt" in card
    assert str(project.parent / "data") not in card  # no local folders in a shipped card
    wheel = project / "packages/en_bert_ner-0.1.0/dist/en_bert_ner-0.1.0-py3-none-any.whl"
    assert wheel.exists()
    assert (project / "packages/en_bert_ner-0.1.0/dist/en_bert_ner-0.1.0.tar.gz").exists()

    # Install the wheel alone into its own directory and load it in a fresh process by name.
    site = project.parent / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    run(pip + ["--target", str(site), str(wheel)], project, dict(os.environ))
    code = (
        "import json, spacy; from spacy import displacy\n"
        "nlp = spacy.load('en_bert_ner')\n"
        "doc = nlp('yesterday john smith visited paris with mary jones .')\n"
        "html = displacy.render(doc, style='ent')\n"
        "print(json.dumps({'ents': [[e.text, e.label_] for e in doc.ents], 'html': html,\n"
        "  'performance': nlp.meta['performance']['ents_f'], 'file': spacy.util.get_package_path"
        "('en_bert_ner').as_posix()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    out = json.loads(run([sys.executable, "-c", code], project.parent, env).splitlines()[-1])
    assert out["file"].startswith(site.as_posix())
    assert out["ents"] == [["john smith", "PER"], ["paris", "LOC"], ["mary jones", "PER"]]
    assert 'class="entity"' in out["html"] and "john smith" in out["html"]
    # The packaged meta carries the evaluated test scores.
    assert out["performance"] == pytest.approx(test_scores["ents_f"])


@pytest.mark.workflow
def test_project_reruns_only_what_changed(project: Path, tiny_bert: str) -> None:
    if not (project / "project.lock").exists():
        project_run(project, tiny_bert, "all")
    output = project_run(project, tiny_bert, "all")
    for step in ("convert", "train", "evaluate", "analyze", "report"):
        assert f"Skipping '{step}': nothing changed" in output
    started = read_log(project / "training" / "log.jsonl")["started"]
    config = project / "configs" / "bert_ner.cfg"
    # A changed config retrains (a new seed gives new weights), and so re-evaluates and repackages.
    config.write_text(config.read_text().replace("seed = 0", "seed = 1"))
    output = project_run(project, tiny_bert, "all")
    assert "Skipping 'convert': nothing changed" in output
    assert "Skipping 'train'" not in output
    assert "Skipping 'evaluate'" not in output
    # The retrained model's log replaces the old one, and the report is redrawn from it.
    assert read_log(project / "training" / "log.jsonl")["started"] != started
    assert "Skipping 'report'" not in output


# --- project.yml, README and committed results: checks that need no workflow run ----------------


def project_commands() -> Dict[str, Dict[str, Any]]:
    commands = srsly.read_yaml(ROOT / "project.yml")["commands"]
    return {command["name"]: command for command in commands}


def promises(block: Any) -> Iterator[tuple]:
    """(registry, name) of every registered function a config block calls."""
    if isinstance(block, dict):
        for key, value in block.items():
            if key.startswith("@"):
                yield key[1:], value
            else:
                yield from promises(value)


def package_imports(module: str) -> Set[str]:
    """The package's modules that `module` imports, directly or through each other."""
    seen: Set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        source = (ROOT / "spacy_bert_ner" / f"{name}.py").read_text(encoding="utf8")
        todo += re.findall(r"^from \.(\w+) import", source, flags=re.MULTILINE)
        for names in re.findall(r"^from \. import ([\w, ]+)", source, flags=re.MULTILINE):
            todo += [n.strip() for n in names.split(",")]
    return seen


def test_train_deps_list_every_module_that_shapes_training(tiny_bert: str) -> None:
    """A change to any module the training config reaches (the component, its layers, the scorer,
    the augmenter, optimizer, schedules, logger, and what they import) retrains."""
    nlp = build_nlp(tiny_bert)
    modules = {type(pipe).__module__ for _, pipe in nlp.pipeline}
    for registry_name, name in promises(nlp.config):
        modules.add(registry.get(registry_name, name).__module__)
    ours = {m.split(".")[1] for m in modules if m.startswith("spacy_bert_ner.")}
    assert {"pipeline_component", "architectures", "augmenters", "schedules"} <= ours
    needed = set().union(*(package_imports(module) for module in ours))
    deps = set(project_commands()["train"]["deps"])
    assert sorted(f"spacy_bert_ner/{m}.py" for m in needed) == sorted(
        dep for dep in deps if dep.startswith("spacy_bert_ner/")
    )


@pytest.mark.parametrize("command", ["convert", "train", "analyze", "report", "package"])
def test_project_deps_name_existing_modules_and_the_cli(command: str) -> None:
    deps = project_commands()[command]["deps"]
    modules = [dep for dep in deps if dep.startswith("spacy_bert_ner/")]
    # A module, or a subpackage (weasel hashes a folder's files).
    assert [m for m in modules if not (ROOT / m).is_file() and not (ROOT / m).is_dir()] == []
    scripts = " ".join(project_commands()[command]["script"])
    if "python -m spacy_bert_ner" in scripts:
        assert "spacy_bert_ner/cli.py" in deps


def test_readme_workflow_table_is_the_projects() -> None:
    """README's workflow line and table list the steps of project.yml's `all`, in order."""
    steps = srsly.read_yaml(ROOT / "project.yml")["workflows"]["all"]
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    assert f"workflow `{' → '.join(steps)}`" in readme
    table = readme.split("## The workflow", 1)[1].split("\n\n")[2]
    rows = re.findall(r"^\| `(\w+)` \| (.*)\|$", table, flags=re.MULTILINE)
    assert [name for name, what in rows if "(not in `all`)" not in what] == steps
    assert set(name for name, _ in rows) == set(project_commands())


def test_committed_results_hold_no_absolute_paths() -> None:
    """Result JSONs are read on other machines: paths in them are relative to the repository."""
    found = []
    for path in sorted((ROOT / "benchmarks" / "results").rglob("*.json")):
        text = path.read_text(encoding="utf8")
        found += [(path.name, m) for m in re.findall(r"(?<![\w.~/:])/(?:[\w.-]+/)+[\w.-]+", text)]
    assert found == []
