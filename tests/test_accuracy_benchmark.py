"""benchmarks/accuracy.py on tiny data: three systems, one scorer, identical gold, one table."""

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest
from spacy.tokens import DocBin
from spacy.vocab import Vocab
from synthetic import make_sentences, to_conll
from typer.testing import CliRunner

from spacy_bert_ner.distillation import TEACHER_KEY

ROOT = Path(__file__).parent.parent


def load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("accuracy", ROOT / "benchmarks" / "accuracy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    return load_harness()


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

    page = tmp_path / "BENCHMARKS.md"
    page.write_text(f"# Benchmarks\n{harness.TABLE_START}\nold\n{harness.TABLE_END}\nafter\n")
    result = CliRunner().invoke(
        harness.app, ["table", "--results-dir", str(results), "--write", str(page)]
    )
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "old" not in text and text.endswith("after\n")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert sorted(row.split(" | ")[0][2:] for row in rows[1:]) == ["bert_ner", "hf", "spacy_ner"]
    assert f"**{ours['test']['f']:.2f}**" in text


def test_unknown_system_is_refused(harness: ModuleType) -> None:
    result = CliRunner().invoke(harness.app, ["run", "crf", "conll2003"])
    assert result.exit_code != 0
    assert "unknown system 'crf'" in result.output
