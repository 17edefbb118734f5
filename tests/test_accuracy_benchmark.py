"""The benchmarks project: accuracy.py on tiny data (three systems, one scorer, identical gold), the
records (record.py) and BENCHMARKS.md generated from them (md_tables.py)."""

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any, Dict

import pytest
from spacy.tokens import DocBin
from spacy.vocab import Vocab
from synthetic import make_sentences, to_conll
from typer.testing import CliRunner

from spacy_bert_ner.distillation import TEACHER_KEY

ROOT = Path(__file__).parent.parent


def load_script(name: str) -> ModuleType:
    """A script of benchmarks/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    return load_script("accuracy")


def test_all_systems_on_the_same_gold(harness: ModuleType, tiny_bert: str, tmp_path: Path) -> None:
    data = tmp_path / "data" / "conll2003"
    data.mkdir(parents=True)
    for split, n, seed in [("train", 80, 0), ("dev", 20, 1), ("test", 20, 2)]:
        (data / f"{split}.txt").write_text(to_conll(make_sentences(n, seed)), encoding="utf8")
    results = tmp_path / "results"
    common = ["--encoder", tiny_bert, "--data-dir", str(tmp_path / "data")]
    common += ["--work-dir", str(tmp_path / "work"), "--results-dir", str(results)]
    runs = {
        # Ours with a learning rate a 2-layer random BERT can learn from in a few epochs.
        "bert_ner": [
            "--epochs",
            "12",
            "--set",
            "training.optimizer.learn_rate.initial_rate=0.001",
            "--set",
            "training.batcher.size=50",
        ],
        "spacy_ner": ["--epochs", "1"],
        "hf": ["--epochs", "1"],
    }
    outputs = {}
    for system, args in runs.items():
        result = CliRunner().invoke(harness.app, ["run", system, "conll2003", *common, *args])
        assert result.exit_code == 0, result.output
        outputs[system] = result.output
    scores = {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}
    assert set(scores) == {"conll2003__bert_ner", "conll2003__spacy_ner", "conll2003__hf"}
    ours = scores["conll2003__bert_ner"]
    # Every system is scored against the same entities, however its docs are grouped.
    for split in ("dev", "test"):
        assert len({s[split]["n_gold"] for s in scores.values()}) == 1
    assert ours["n_sents"] == harness.project_n_sents()
    assert ours["dev"]["n_docs"] < scores["conll2003__hf"]["dev"]["n_docs"] == 20
    assert ours["dev"]["f"] >= 80.0, ours["dev"]
    # Ours derives its schedule from the corpus; spaCy's ner is given the same run length.
    assert ours["settings"]["training.max_epochs"] == 12
    assert "training.optimizer.learn_rate.total_steps" not in ours["settings"]
    assert ours["total_steps"] == 12 * ours["batches_per_epoch"]
    # ... counted as training counts them: the augmenter cuts the 10-sentence docs into pieces.
    trained = re.search(r"decay\s+to\s+0\s+at\s+step\s+(\d+)", outputs["bert_ner"])
    assert trained is not None and int(trained.group(1)) == ours["total_steps"]
    peer = scores["conll2003__spacy_ner"]
    assert peer["settings"]["training.optimizer.learn_rate.total_steps"] == peer["total_steps"]
    assert ours["dev_curve"] and ours["dev_curve"][0][0] == 0
    # Every wrong prediction is one type/boundary/spurious error; missed ones are wrong gold.
    errors, dev = ours["errors_dev"], ours["dev"]
    wrong_pred = errors["type"] + errors["boundary"] + errors["boundary+type"] + errors["spurious"]
    assert wrong_pred == dev["n_pred"] - dev["tp"]
    assert errors["missed"] <= dev["n_gold"] - dev["tp"]

    # A model trained elsewhere is scored the same way.
    model = tmp_path / "work" / "conll2003__bert_ner" / "training" / "model-last"
    args = ["evaluate", str(model), "conll2003", "--name", "again", "--n-sents", "10"]
    args += ["--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "again")]
    result = CliRunner().invoke(harness.app, args)
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "again" / "conll2003__again.json").read_text())
    assert again["system"] == "bert_ner"
    assert (again["dev"], again["test"]) == (ours["dev"], ours["test"])

    # An ensemble of the model with itself decodes the same probabilities (stored in float16).
    result = CliRunner().invoke(
        harness.app, [*args, "--ensemble-with", str(model), "--name", "ens"]
    )
    assert result.exit_code == 0, result.output
    ens = json.loads((tmp_path / "again" / "conll2003__ens.json").read_text())
    assert ens["ensemble"] == [str(model), str(model)]
    assert abs(ens["dev"]["f"] - ours["dev"]["f"]) <= 1.0 and ens["dev"]["n_pred"] > 0

    # Distillation: the training docs carry the teacher's probabilities into the corpus.
    args = ["run", "bert_ner", "conll2003", *common, "--name", "taught", "--epochs", "1"]
    args += ["--teacher", str(model), "--set", "components.bert_ner.teacher_weight=0.5"]
    args += ["--results-dir", str(tmp_path / "taught")]
    result = CliRunner().invoke(harness.app, args)
    assert result.exit_code == 0, result.output
    taught = json.loads((tmp_path / "taught" / "conll2003__taught.json").read_text())
    assert taught["teachers"] == [str(model)]
    assert taught["settings"]["components.bert_ner.teacher_weight"] == 0.5
    corpus = tmp_path / "work" / "conll2003__taught" / "corpus" / "train.spacy"
    docs = list(DocBin().from_disk(corpus).get_docs(Vocab()))
    assert all(len(doc.user_data[TEACHER_KEY]["probs"]) == len(doc) for doc in docs)


def test_unknown_system_is_refused(harness: ModuleType) -> None:
    result = CliRunner().invoke(harness.app, ["run", "crf", "conll2003"])
    assert result.exit_code != 0
    assert "unknown system 'crf'" in result.output


def test_benchmarks_page_is_generated_from_the_records() -> None:
    """BENCHMARKS.md is what md_tables.py makes of benchmarks/results/ (after a new record:
    `python -m spacy project run tables benchmarks`)."""
    page = (ROOT / "BENCHMARKS.md").read_text(encoding="utf8")
    assert page == load_script("md_tables").render()


def accuracy_run(name: str, seed: int, dev: float, test: float, **extra: Any) -> Dict[str, Any]:
    """A result of `accuracy.py run` (or, with `model`, `evaluate`), as much as record.py reads."""
    settings = {"system.seed": seed} if seed else {}
    return {
        "name": name,
        "dataset": "conll2003",
        "system": "bert_ner",
        "epochs": 4,
        "n_sents": 10,
        "settings": settings,
        "train_seconds": 600,
        "command": f"python accuracy.py run bert_ner conll2003 --name {name}",
        "machine": {"processor": "x86_64", "gpu": None, "torch_threads": 1, "torch": "2.0"},
        "dev": {"p": dev, "r": dev, "f": dev},
        "test": {"p": test, "r": test, "f": test},
        **extra,
    }


def test_record_pairs_each_seed_with_its_own_evaluations() -> None:
    """An evaluation belongs to the run whose model it scored, not to a run whose name is a
    prefix of it (default-s1 is not default-s1x's), and the means skip missing cells."""
    record = load_script("record")
    model = "work/conll2003__{}/training/model-last"
    runs = [
        accuracy_run("default-s1", 1, 94.0, 90.0),
        accuracy_run("default-s1x", 2, 95.0, 91.0),
        accuracy_run("s1x-one", 2, 93.0, 89.0, n_sents=1, model=model.format("default-s1x")),
        accuracy_run("s1-docs", 1, 94.5, 90.5, n_sents=0, model=model.format("default-s1")),
    ]
    result = record.record("default-conll2003", runs)
    assert result["seeds"] == [1, 2]
    assert result["columns"][3:7] == [
        "dev F1, one sentence per Doc",
        "test F1, one sentence per Doc",
        "dev F1, whole documents",
        "test F1, whole documents",
    ]
    assert result["rows"] == [
        [1, 94.0, 90.0, None, None, 94.5, 90.5, 10],
        [2, 95.0, 91.0, 93.0, 89.0, None, None, 10],
        ["mean", 94.5, 90.5, 93.0, 89.0, 94.5, 90.5, None],
    ]
    assert result["machine"] == ["x86_64, no GPU, 1 torch thread(s)"]
    assert result["versions"] == {"torch": "2.0"}
    # The page shows the record: its command, seeds and rows.
    page = "\n".join(load_script("md_tables").section(result))
    assert "`python -m spacy project run default-conll2003 benchmarks`" in page
    assert "Seeds: 1, 2." in page
    assert "| mean | 94.50 | 90.50 | 93.00 | 89.00 | 94.50 | 90.50 |  |" in page


def test_benchmarks_project_calls_what_exists() -> None:
    """Every script a command of benchmarks/project.yml runs is in benchmarks/, and every claim it
    records is one record.py knows."""
    from weasel.util import load_project_config

    project = load_project_config(ROOT / "benchmarks")
    claims = load_script("record").CLAIMS
    for command in project["commands"]:
        for line in command["script"]:
            words = line.split()
            if words[0] in ("python", "bash") and words[1].endswith((".py", ".sh")):
                assert (ROOT / "benchmarks" / words[1]).is_file(), line
            if words[1] == "record.py":
                assert words[2] in claims, line
    steps = {step for workflow in project["workflows"].values() for step in workflow}
    assert steps <= {command["name"] for command in project["commands"]}
