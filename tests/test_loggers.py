"""The JSONL training logger: what it writes, how it is read back, and how spaCy finds it."""

import json
import sys
from pathlib import Path

import pytest
import spacy

from spacy_bert_ner.legacy import make_jsonl_logger
from spacy_bert_ner.loggers import command_line, read_log

ROOT = Path(__file__).parent.parent


def info(step: int, f: float, words: int) -> dict:
    return {
        "epoch": 0,
        "step": step,
        "score": f,
        "other_scores": {"ents_f": f, "ents_per_type": {"PER": {"p": 1.0, "r": f, "f": f}}},
        "losses": {"transformer": 0.0, "bert_ner": 10.0 / (step + 1)},
        "checkpoints": [],
        "seconds": 0,
        "words": words,
    }


def test_logger_writes_command_evaluations_and_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPACY_CONFIG_OVERRIDES", "--training.max_steps 2")
    monkeypatch.setattr(sys, "argv", ["/x/spacy/__main__.py", "train", "my config.cfg"])
    path = tmp_path / "log" / "train.jsonl"
    path.parent.mkdir()
    path.write_text("a stale log of an earlier run\n")
    log_step, finalize = make_jsonl_logger(path)(spacy.blank("en"))
    log_step(info(0, 0.0, 0))
    log_step(None)  # a step without evaluation writes nothing
    log_step(info(2, 0.5, 1000))
    finalize()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 4
    assert lines[0]["command"] == (
        "SPACY_CONFIG_OVERRIDES='--training.max_steps 2' python -m spacy train 'my config.cfg'"
    )
    assert lines[2]["step"] == 2 and lines[2]["words"] == 1000
    assert lines[2]["losses"] == {"transformer": 0.0, "bert_ner": 10.0 / 3}
    assert lines[2]["scores"]["ents_per_type"]["PER"]["r"] == 0.5
    assert lines[2]["words_per_second"] > 0
    assert "finished" in lines[3]

    log = read_log(path)
    assert [e["step"] for e in log["evaluations"]] == [0, 2]
    assert log["command"] == lines[0]["command"]
    assert log["seconds"] == lines[3]["seconds"]


def test_read_log_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    record = {"epoch": 0, "step": 0, "losses": {}, "scores": {}}
    path.write_text(json.dumps(record) + "\nnot json\n")
    with pytest.raises(ValueError, match=r"log.jsonl:2: not a JSON line"):
        read_log(path)


def test_command_line_of_a_plain_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACY_CONFIG_OVERRIDES", raising=False)
    assert command_line(["train.py", "--n", "1"]) == "train.py --n 1"


def test_project_config_keeps_the_console_table_and_the_log() -> None:
    config = spacy.util.load_config(ROOT / "configs" / "bert_ner.cfg")
    logger = config["training"]["logger"]
    assert logger["@loggers"] == "spacy.ChainLogger.v1"
    assert logger["logger1"]["@loggers"] == "spacy.ConsoleLogger.v1"
    assert logger["logger2"] == {
        "@loggers": "spacy_bert_ner.JSONLLogger.v2",
        "path": "training/log.jsonl",
    }
