"""A training run of any length ends scored: the final state is evaluated, `model-best` is never
the untrained step-0 checkpoint, and the log, model card and report say how long the run was."""

import shutil
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.training.initialize import init_nlp
from spacy.training.loop import train
from spacy.util import load_config
from test_schedules import BY_SEQUENCE, CONFIG_PATH, write_corpus

from spacy_bert_ner.checkpoints import BestCheckpoint
from spacy_bert_ner.loggers import read_log
from spacy_bert_ner.workflow.files import best_evaluation, describe_training

TEXTS = ["yesterday john smith visited paris .", "mary jones works for acme corp in berlin ."]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    base = tmp_path_factory.mktemp("checkpoint-corpora")
    # 40 docs in batches of 8: 5 updates per epoch, exactly.
    return {
        "train": write_corpus(base / "train.spacy", 40),
        "dev": write_corpus(base / "dev.spacy", 8, seed=2),
    }


def run_training(
    corpora: Dict[str, Path], tiny_bert: str, out: Path, **overrides: Any
) -> Dict[str, Any]:
    config = load_config(
        CONFIG_PATH,
        overrides={
            "paths.train": str(corpora["train"]),
            "paths.dev": str(corpora["dev"]),
            "components.transformer.model.name": tiny_bert,
            "training.batcher": BY_SEQUENCE,
            "training.optimizer.learn_rate.initial_rate": 1e-3,
            "training.logger": {
                "@loggers": "spacy_bert_ner.JSONLLogger.v2",
                "path": str(out / "log.jsonl"),
            },
            **overrides,
        },
    )
    train(init_nlp(config), out)
    return read_log(out / "log.jsonl")


def entities(path: Path) -> List[List[Any]]:
    nlp = spacy.load(path)
    return [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(TEXTS)]


def test_run_shorter_than_one_evaluation_period(corpora, tiny_bert, tmp_path):
    """15 updates, eval_frequency 1000: spaCy scores only update 0; the final state is scored
    and is model-best (before, model-best was the untrained step-0 checkpoint)."""
    log = run_training(
        corpora,
        tiny_bert,
        tmp_path,
        **{"training.max_epochs.epochs": 3, "training.eval_frequency.every": 1000},
    )
    assert [e["step"] for e in log["evaluations"]] == [0, 14]
    final = log["evaluations"][-1]
    assert final["final"] is True and final["epoch"] == 2 and final["losses"] == {}
    assert (log["updates"], log["epochs"], log["stopped_by"]) == (15, 3, "max_epochs")
    assert log["best_step"] == 14
    assert entities(tmp_path / "model-best") == entities(tmp_path / "model-last")
    assert describe_training(log).startswith(
        "15 updates in 3 epochs (stopped by max_epochs), 2 dev evaluations, "
    )
    assert best_evaluation(log) is final


def test_last_step_not_a_multiple_of_the_frequency(corpora, tiny_bert, tmp_path):
    log = run_training(
        corpora,
        tiny_bert,
        tmp_path,
        **{"training.max_epochs.epochs": 3, "training.eval_frequency.every": 4},
    )
    assert [e["step"] for e in log["evaluations"]] == [0, 4, 8, 12, 14]
    assert [e.get("final", False) for e in log["evaluations"]] == [False] * 4 + [True]
    assert log["updates"] == 15
    best = best_evaluation(log)
    assert best is not None and best["step"] > 0 and log["best_step"] == best["step"]
    # model-best is the best trained checkpoint: the final state when it scores best.
    if best["step"] == 14:
        assert entities(tmp_path / "model-best") == entities(tmp_path / "model-last")


def test_max_steps_and_the_derived_frequency(corpora, tiny_bert, tmp_path):
    """max_steps = 6 stops inside the second epoch (7 updates); the derived frequency (about
    10 evaluations over 7 updates: every update) scores the last update itself."""
    log = run_training(
        corpora,
        tiny_bert,
        tmp_path,
        **{"training.max_epochs.epochs": 30, "training.max_steps": 6},
    )
    assert [e["step"] for e in log["evaluations"]] == list(range(7))
    assert not any(e.get("final") for e in log["evaluations"])
    assert (log["updates"], log["epochs"], log["stopped_by"]) == (7, 1.4, "max_steps")
    assert describe_training(log).startswith(
        "7 updates in 1.4 epochs (stopped by max_steps), 7 dev evaluations, "
    )


def test_model_best_is_never_the_step_zero_checkpoint(tmp_path):
    """spaCy's loop copies model-last to model-best when a score is the best so far, step 0
    included: a trained checkpoint scoring below the untrained one was never kept."""
    last, best = tmp_path / "model-last", tmp_path / "model-best"
    keeper = BestCheckpoint()

    def evaluation(step: int, score: float, loop_keeps: bool) -> None:
        shutil.rmtree(last, ignore_errors=True)
        last.mkdir()
        (last / "step").write_text(str(step))
        if loop_keeps:  # what spaCy's loop does before it logs the step
            shutil.rmtree(best, ignore_errors=True)
            shutil.copytree(last, best)
        keeper.on_evaluation({"step": step, "score": score, "output_path": str(last)})

    evaluation(0, 0.3, loop_keeps=True)
    assert not best.exists()
    evaluation(4, 0.1, loop_keeps=False)  # below step 0: the loop keeps step 0
    assert (best / "step").read_text() == "4"
    evaluation(8, 0.05, loop_keeps=False)
    assert (best / "step").read_text() == "4"
    evaluation(12, 0.2, loop_keeps=False)
    assert (best / "step").read_text() == "12"
    assert keeper.best_trained() == (12, 0.2)
