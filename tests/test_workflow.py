"""`spacy project run all` on tiny data with a tiny local BERT, then the package it builds."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Set

import pytest
import srsly
from spacy.util import load_config
from synthetic import make_sentences, to_conll
from util import fresh_environment

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
    # `install` (the last step of `all`) installs into a folder of the test, not this environment.
    env["PIP_TARGET"] = str(project_dir.parent / "site")
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
    steps = [e["step"] for e in log["evaluations"]]
    assert steps[:2] == [0, 20]
    # The run does not end on a multiple of 20: its final state was scored all the same.
    assert log["updates"] % 20 != 1 and steps[-1] == log["updates"] - 1
    assert log["evaluations"][-1]["final"] and log["best_step"] > 0
    assert (log["epochs"], log["stopped_by"]) == (10, "max_epochs")
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
    assert f"{log['updates']} updates in 10 epochs (stopped by max_epochs)" in card
    assert "spacy-bert-ner 0.1.0" in card  # the code it runs with
    assert str(project.parent / "data") not in card  # no local folders in a shipped card
    dist = project / "packages/en_bert_ner-0.1.0/dist"
    assert sorted(p.name for p in dist.iterdir()) == [
        "en_bert_ner-0.1.0-py3-none-any.whl",
        "en_bert_ner-0.1.0.tar.gz",
        "spacy_bert_ner-0.1.0-py3-none-any.whl",
    ]
    assert f"python -m pip install {dist.relative_to(project)}/*.whl" in " ".join(output.split())
    # No requirement on a name that no package index holds: the code's wheel is beside it.
    requires = zipfile.ZipFile(dist / "en_bert_ner-0.1.0-py3-none-any.whl").read(
        "en_bert_ner-0.1.0.dist-info/METADATA"
    )
    requirements = re.findall(r"^Requires-Dist: ([\w.-]+)", requires.decode(), flags=re.M)
    assert "spacy-transformers" in requirements
    assert [r for r in requirements if r.lower().replace("_", "-") == "spacy-bert-ner"] == []

    # `all` ended with `install`: load the pipeline by name in a fresh process.
    site = project.parent / "site"
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

    # On another machine: `pip install DIST/*.whl` into an environment without this repository.
    # Its dependencies are this environment's packages (not this one), linked in, standing in for
    # the package index: pip resolves the wheels' requirements against them, with no index.
    python = str(fresh_environment(project.parent))
    site_packages = Path(python).parent.parent / "lib"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PIP_NO_INDEX": "1"}
    env.pop("PYTHONPATH", None)
    pip = [sys.executable, "-m", "pip", "--python", python]
    wheels = [str(p) for p in sorted(dist.glob("*.whl"))]
    said = run([*pip, "install", "--dry-run", *wheels], project.parent, env)  # resolves, no index
    assert "Would install en_bert_ner-0.1.0 spacy-bert-ner-0.1.0" in said, said
    run([*pip, "install", "-q", "--no-deps", *wheels], project.parent, env)
    check = "import spacy_bert_ner; print(spacy_bert_ner.__file__)"
    assert run([python, "-c", check], project.parent, env).startswith(str(site_packages))
    out = json.loads(run([python, "-c", code], project.parent, env).splitlines()[-1])
    assert out["file"].startswith(site_packages.as_posix())
    assert out["ents"] == [["john smith", "PER"], ["paris", "LOC"], ["mary jones", "PER"]]
    # Without the code's wheel, loading names it, instead of failing on an unknown factory.
    run([*pip, "uninstall", "-q", "-y", "spacy-bert-ner"], project.parent, env)
    result = subprocess.run(
        [python, "-c", code], cwd=project.parent, env=env, text=True, capture_output=True
    )
    assert result.returncode == 1
    assert "needs spacy-bert-ner 0.1.0, which is not installed" in result.stderr
    assert "spacy_bert_ner-0.1.0-py3-none-any.whl" in result.stderr


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


def test_every_dep_is_an_input_or_an_earlier_output() -> None:
    """Each command's deps are files of the repository, project vars, or outputs of a command that
    runs before it in `all` (so `spacy project run all` knows what to rerun), and every command
    that runs the package's CLI depends on the package (or the part of it that it runs)."""
    commands = project_commands()
    project_vars = srsly.read_yaml(ROOT / "project.yml")["vars"]
    produced: Set[str] = set()
    for name in srsly.read_yaml(ROOT / "project.yml")["workflows"]["all"]:
        command = commands[name]
        for dep in command.get("deps", []):
            if dep.startswith("${vars."):  # the annotated data: inputs
                continue
            dep = re.sub(r"\$\{vars\.(\w+)\}", lambda m: str(project_vars[m[1]]), dep)
            assert (ROOT / dep).exists() or dep in produced, (name, dep)
        if "python -m spacy_bert_ner" in " ".join(command["script"]):
            package_deps = [d for d in command["deps"] if d.split("/")[0] == "spacy_bert_ner"]
            assert package_deps, name
        for output in command.get("outputs", []) + command.get("outputs_no_cache", []):
            produced.add(re.sub(r"\$\{vars\.(\w+)\}", lambda m: str(project_vars[m[1]]), output))


def test_readme_workflow_table_is_the_projects() -> None:
    """README's workflow line and table list the steps of project.yml's `all`, in order."""
    steps = srsly.read_yaml(ROOT / "project.yml")["workflows"]["all"]
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    assert f"workflow `{' → '.join(steps)}`" in readme
    table = readme.split("| command | what it does |", 1)[1].split("\n\n")[0]
    rows = re.findall(r"^\| `(\w+)` \| (.*)\|$", table, flags=re.MULTILINE)
    assert [name for name, what in rows if "(not in `all`)" not in what] == steps
    assert set(name for name, _ in rows) == set(project_commands())
