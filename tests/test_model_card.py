"""The model card: the meta.json `spacy package` writes the package's README from."""

import json
import re
from pathlib import Path
from typing import Any, Dict

import pytest
from spacy.cli.package import generate_readme
from typer.testing import CliRunner

from spacy_bert_ner.cli import app
from spacy_bert_ner.workflow.files import format_duration
from spacy_bert_ner.workflow.model_card import describe_device, encoder_lowercases, model_card_meta

ROOT = Path(__file__).parent.parent
TEST_SCORES = {
    "ents_p": 0.9,
    "ents_r": 0.8,
    "ents_f": 0.847,
    "ents_per_type": {
        "PER": {"p": 0.95, "r": 0.9, "f": 0.9243},
        "LOC": {"p": 0.85, "r": 0.7, "f": 0.7677},
    },
    "speed": 2912.4,
}


def write_model(directory: Path, encoder: str) -> Path:
    """What the card reads from a trained pipeline: its meta.json and config.cfg."""
    directory.mkdir(parents=True)
    meta = {
        "lang": "en",
        "name": "pipeline",
        "version": "0.0.0",
        "spacy_version": ">=3.8.0,<3.9.0",
        "pipeline": ["transformer", "bert_ner"],
        "components": ["transformer", "bert_ner"],
        "labels": {"transformer": [], "bert_ner": ["LOC", "PER"]},
        "performance": {"ents_f": 0.9, "transformer_loss": 1.0},
    }
    (directory / "meta.json").write_text(json.dumps(meta))
    config = (ROOT / "configs" / "bert_ner.cfg").read_text()
    config = config.replace('"sentence-transformers/all-MiniLM-L6-v2"', json.dumps(encoder))
    (directory / "config.cfg").write_text(config)
    return directory


def log(seconds: float = 3725.0) -> Dict[str, Any]:
    evaluation = {"epoch": 2, "losses": {"bert_ner": 1.0}, "seconds": seconds}
    return {
        "command": "python -m spacy train configs/bert_ner.cfg --output training --gpu-id -1",
        "started": "2026-01-01T00:00:00+00:00",
        "seconds": seconds,
        "evaluations": [
            {**evaluation, "step": 200, "score": 0.91, "scores": {"ents_f": 0.91}},
            {**evaluation, "step": 400, "score": 0.9, "scores": {"ents_f": 0.9}},
        ],
    }


@pytest.fixture
def uncased_encoder(tmp_path: Path) -> str:
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return str(encoder)


def test_encoder_lowercases(uncased_encoder: str, tmp_path: Path) -> None:
    assert encoder_lowercases(uncased_encoder) is True
    assert encoder_lowercases(str(tmp_path / "nowhere")) is None


def test_describe_device_on_cpu() -> None:
    assert re.fullmatch(r"CPU \(.+, \d+ cores, torch threads: \d+\)", describe_device(-1))


def test_model_card_meta_and_readme(uncased_encoder: str, tmp_path: Path) -> None:
    model = write_model(tmp_path / "model-best", uncased_encoder)
    meta = model_card_meta(
        model,
        TEST_SCORES,
        log(),
        name="bert_ner",
        version="0.1.0",
        data={"train": "data/train.txt", "test": "data/test.txt"},
        device="CPU (x86_64, 2 cores, 2 torch threads)",
        dev_scores={"ents_f": 0.93},
    )
    assert (meta["name"], meta["version"]) == ("bert_ner", "0.1.0")
    # The test scores are the performance, as before (the trained-in ones are overwritten).
    assert meta["performance"]["ents_f"] == 0.847
    assert meta["performance"]["transformer_loss"] == 1.0
    assert meta["sources"][0] == {"name": f"encoder: {uncased_encoder}"}
    assert meta["sources"][1] == {"name": "train data: train.txt"}
    assert "uncased transformer encoder" in meta["description"]
    assert "BILUO tags" in meta["description"] and "Test entity F1 84.70" in meta["description"]
    notes = meta["notes"]
    assert "| PER | 95.00 | 90.00 | 92.43 |" in notes
    assert "| LOC | 85.00 | 70.00 | 76.77 |" in notes
    assert "| **all** | 90.00 | 80.00 | 84.70 |" in notes
    assert "Dev entity F1: 93.00." in notes
    assert "2,912 words/s (`spacy evaluate` on the test set, CPU (x86_64, 2 cores" in notes
    # A log without the run's last line (v1) says what its evaluations show, as a lower bound.
    assert (
        "at least 401 updates in 3 epochs (the log ends at its last evaluation), "
        "2 dev evaluations, 1 h 2 min" in notes
    )
    assert "the checkpoint after update 201, dev entity F1 91.00 during training" in notes
    assert "```bash\npython -m spacy train configs/bert_ner.cfg --output training" in notes
    assert "only through the casing features" in notes
    assert "No nested or overlapping entities" in notes
    assert "Trained on train.txt only" in notes and "English news" not in notes

    readme = generate_readme(meta)  # what `spacy package` writes as the package's README
    assert readme.startswith(meta["description"])
    assert "### Test scores per type" in readme and "### Known limits" in readme
    assert "`LOC`, `PER`" in readme


def test_model_card_names_data_files_without_local_folders(uncased_encoder: str, tmp_path: Path):
    """A data folder is this machine's, absolute or relative (`../data/test.txt`, as the README's
    own-data recipe gives it): the card names the file."""
    model = write_model(tmp_path / "model-best", uncased_encoder)
    data = {"train": str(tmp_path / "tweets_train.jsonl"), "test": "../data/test.txt"}
    meta = model_card_meta(
        model, TEST_SCORES, log(), name="n", version="1", data=data, device="CPU"
    )
    assert meta["sources"][1:] == [
        {"name": "train data: tweets_train.jsonl"},
        {"name": "test data: test.txt"},
    ]
    assert str(tmp_path / "tweets_train.jsonl") not in json.dumps(meta)
    assert "Trained on tweets_train.jsonl only" in meta["notes"]


def test_model_card_says_when_there_are_no_casing_features(uncased_encoder: str, tmp_path: Path):
    """An empty features section is the default features; `features = null` is none."""
    model = write_model(tmp_path / "model-best", uncased_encoder)
    config = (model / "config.cfg").read_text()
    section = "[components.bert_ner.model.features]\n"
    assert section in config
    (model / "config.cfg").write_text(
        config.replace(section, "").replace(
            "[components.bert_ner.model]\n", "[components.bert_ner.model]\nfeatures = null\n"
        )
    )
    meta = model_card_meta(model, TEST_SCORES, {}, name="n", version="1", data={}, device="CPU")
    assert "this pipeline has no casing features" in meta["notes"]
    assert "only through the casing features" not in meta["notes"]


def test_hub_encoder_is_linked_and_cased_encoder_not_called_uncased(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model-best", "bert-base-cased")
    meta = model_card_meta(
        model, TEST_SCORES, {}, name="n", version="1", data={}, device="GPU NVIDIA H100"
    )
    assert meta["sources"] == [
        {"name": "encoder: bert-base-cased", "url": "https://huggingface.co/bert-base-cased"}
    ]
    # Unknown offline whether it lowercases: the card says what would hold if it did.
    assert "uncased" not in meta["description"]
    assert "Trained with" not in meta["notes"]


def test_package_meta_cli(uncased_encoder: str, tmp_path: Path) -> None:
    model = write_model(tmp_path / "model-best", uncased_encoder)
    test_json = tmp_path / "test.json"
    test_json.write_text(json.dumps(TEST_SCORES))
    log_path = tmp_path / "log.jsonl"
    lines = [{"command": "python -m spacy train x.cfg"}, *log()["evaluations"], {"seconds": 61}]
    log_path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    output = tmp_path / "meta.json"
    args = ["package-meta", str(model), str(test_json), str(output), "--name", "bert_ner"]
    args += ["--version", "0.1.0", "--train-log", str(log_path), "--train-data", "train.txt"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads(output.read_text())
    assert meta["performance"]["ents_f"] == 0.847
    assert "python -m spacy train x.cfg" in meta["notes"] and ", 1 min from" not in meta["notes"]
    assert "at least 401 updates in 3 epochs (the log ends at" in meta["notes"]
    assert "words/s (`spacy evaluate` on the test set, CPU" in meta["notes"]


def test_package_meta_cli_names_bad_inputs(uncased_encoder: str, tmp_path: Path) -> None:
    model = write_model(tmp_path / "model-best", uncased_encoder)
    test_json = tmp_path / "test.json"
    test_json.write_text(json.dumps(TEST_SCORES))
    args = ["package-meta", str(model), str(test_json), str(tmp_path / "out.json")]
    args += ["--name", "bert_ner", "--version", "0.1.0"]
    test_json.write_text("[1, 2]")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "test.json: expected the evaluation scores as a JSON object, not list." in result.output
    test_json.write_text(json.dumps(TEST_SCORES))
    (model / "meta.json").write_text("{oops")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "meta.json: not valid JSON" in result.output
    assert "expected the pipeline's meta.json." in result.output
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(
    "seconds,words",
    [(None, "unknown"), (45.2, "45 s"), (61, "1 min"), (1860, "31 min"), (3725, "1 h 2 min")],
)
def test_training_time_in_words(seconds: Any, words: str) -> None:
    assert format_duration(seconds) == words


@pytest.mark.parametrize(
    "run,said",
    [
        (
            {"updates": 450, "epochs": 3, "stopped_by": "max_epochs", "best_step": 449},
            "450 updates in 3 epochs (stopped by max_epochs), 3 dev evaluations, 1 h 2 min",
        ),
        (
            {"updates": 450, "epochs": 1.5, "stopped_by": "max_steps", "best_step": 449},
            "450 updates in 1.5 epochs (stopped by max_steps), 3 dev evaluations, 1 h 2 min",
        ),
        (
            {"updates": 1, "epochs": 0.01, "stopped_by": "max_steps", "best_step": 449},
            "1 updates in 0.01 epochs (stopped by max_steps), 3 dev evaluations, 1 h 2 min",
        ),
    ],
)
def test_model_card_says_how_long_the_run_was(uncased_encoder, tmp_path, run, said):
    """A JSONLLogger.v2 log ends with the run's length, and a final evaluation when the last
    update was not a multiple of eval_frequency: the card states both, for any run length."""
    train_log = log()
    final = {"epoch": 2, "losses": {}, "step": 449, "score": 0.92, "scores": {"ents_f": 0.92}}
    train_log["evaluations"].append({**final, "final": True})
    meta = model_card_meta(
        write_model(tmp_path / "model", uncased_encoder),
        TEST_SCORES,
        {**train_log, **run},
        name="bert_ner",
        version="0.1.0",
        data={"train": "data/train.txt"},
        device="CPU",
    )
    assert said in meta["notes"]
    assert "the checkpoint after update 450, dev entity F1 92.00 during training" in meta["notes"]
