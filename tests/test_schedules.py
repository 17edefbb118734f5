"""The run length and learning-rate schedule follow the training corpus, epochs and steps."""

import math
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span
from spacy.training.initialize import init_nlp
from spacy.training.loop import train
from spacy.util import load_config, registry
from synthetic import make_doc, make_sentences

from spacy_bert_ner.optimizers import HeadScaledAdam
from spacy_bert_ner.schedules import batches_per_epoch, training_steps

CONFIG_PATH = Path(__file__).parent.parent / "configs" / "bert_ner.cfg"
# An order-independent batcher, so that the number of batches per epoch is exact.
BY_SEQUENCE = {"@batchers": "spacy.batch_by_sequence.v1", "size": 8, "get_length": None}


def reader(path: Path):
    config = {"@readers": "spacy.Corpus.v1", "path": str(path), "gold_preproc": False}
    return registry.resolve({"corpus": config})["corpus"]


def write_corpus(path: Path, n: int, seed: int = 0) -> Path:
    nlp = spacy.blank("en")
    docs = []
    for words, spans in make_sentences(n, seed):
        doc = Doc(nlp.vocab, words=words)
        doc.ents = [Span(doc, s, e, label=label) for s, e, label in spans]
        docs.append(doc)
    DocBin(docs=docs).to_disk(path)
    return path


def resolve_training(overrides: Dict[str, Any]) -> Dict[str, Any]:
    config = load_config(CONFIG_PATH, overrides=overrides, interpolate=True)
    return registry.resolve({"training": config["training"]})["training"]


def learning_rates(optimizer) -> List[float]:
    return [next(optimizer.schedules["learn_rate"]) for _ in range(2000)]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    base = tmp_path_factory.mktemp("corpora")
    return {
        "train40": write_corpus(base / "train40.spacy", 40),
        "train100": write_corpus(base / "train100.spacy", 100, seed=1),
        "dev": write_corpus(base / "dev.spacy", 8, seed=2),
    }


def test_training_steps_follow_epochs_and_steps():
    assert training_steps(481, max_epochs=3, max_steps=0) == 1443
    # spaCy's loop updates at steps 0..max_steps, then stops.
    assert training_steps(481, max_epochs=0, max_steps=1000) == 1001
    assert training_steps(481, max_epochs=3, max_steps=100) == 101
    assert training_steps(10, max_epochs=3, max_steps=100) == 30
    with pytest.raises(ValueError, match="neither .* max_epochs \\(0\\) nor max_steps \\(0\\)"):
        training_steps(481, max_epochs=0, max_steps=0)


def test_batches_per_epoch_counts_the_corpus(corpora):
    nlp = spacy.blank("en")
    corpus = {"c": reader(corpora["train40"])}
    batcher = registry.resolve({"b": BY_SEQUENCE})["b"]
    assert batches_per_epoch(corpus["c"], batcher, "en") == 5  # 40 docs / 8
    assert len(list(corpus["c"](nlp))) == 40


@pytest.mark.parametrize(
    "name,overrides,epochs,steps",
    [
        # Default: enough epochs for 1,000 updates, capped at 30: 30 x 5 batches.
        ("train40", {}, 30, 150),
        ("train100", {}, 30, 390),  # 13 batches of 8
        ("train40", {"training.max_epochs.min_steps": 100}, 20, 100),
        ("train40", {"training.max_epochs.min_steps": 1}, 4, 20),  # at least min_epochs (4)
        # A fixed number of epochs, both ways (the project var sets .epochs).
        ("train40", {"training.max_epochs.epochs": 10}, 10, 50),
        ("train40", {"training.max_epochs": 7}, 7, 35),
        # max_steps ends the run first: 61 updates.
        ("train40", {"training.max_steps": 60}, 30, 61),
    ],
)
def test_schedule_follows_corpus_epochs_and_steps(corpora, name, overrides, epochs, steps):
    settings = {
        "paths.train": str(corpora[name]),
        "training.batcher": BY_SEQUENCE,
        "training.optimizer.learn_rate.warmup_fraction": 0.1,
        **overrides,
    }
    training = resolve_training(settings)
    assert training["max_epochs"] == epochs
    rates = [training["optimizer"].learn_rate] + learning_rates(training["optimizer"])
    warmup = round(0.1 * steps)
    peak = 1e-4
    assert rates[0] == 0.0 and rates[warmup] == pytest.approx(peak)
    assert max(rates) == pytest.approx(peak)
    # Decays to 0 right after the last update (number steps - 1), and stays there.
    assert rates[steps - 1] == pytest.approx(peak / (steps - warmup))
    assert rates[steps] == 0.0 and set(rates[steps:]) == {0.0}


def test_schedule_runs_to_zero_in_spacy_training_loop(corpora, tiny_bert, monkeypatch):
    """`spacy train`'s own loop: the rate of each real update, and where it ends."""
    used: List[float] = []
    step_schedules = HeadScaledAdam.step_schedules

    def record(self) -> None:
        used.append(self.learn_rate)
        step_schedules(self)

    monkeypatch.setattr(HeadScaledAdam, "step_schedules", record)
    config = load_config(
        CONFIG_PATH,
        overrides={
            "paths.train": str(corpora["train40"]),
            "paths.dev": str(corpora["dev"]),
            "components.transformer.model.name": tiny_bert,
            "training.batcher": BY_SEQUENCE,
            "training.max_epochs.epochs": 3,
            "training.eval_frequency": 1000,
            "training.logger": {"@loggers": "spacy.ConsoleLogger.v1", "progress_bar": False},
        },
    )
    train(init_nlp(config), None)
    assert len(used) == 15  # 3 epochs x 5 batches
    warmup = round(0.1 * 15)
    assert used[0] == 0.0 and used[warmup] == pytest.approx(1e-4)
    # The last update runs at the smallest rate above 0; the next would be at 0.
    assert used[-1] == pytest.approx(1e-4 / (15 - warmup))
    assert all(a > b for a, b in zip(used[warmup:], used[warmup + 1 :]))


def test_word_batches_estimate_is_close(corpora):
    """batch_by_words' count depends a little on spaCy's per-epoch shuffle; the schedule counts
    one fixed shuffle. Over many shuffles the real count stays within 1 batch here."""
    import random

    nlp = spacy.blank("en")
    corpus = reader(corpora["train100"])
    batcher = registry.resolve(
        {
            "b": {
                "@batchers": "spacy.batch_by_words.v1",
                "size": 100,
                "tolerance": 0.2,
                "discard_oversize": False,
            }
        }
    )["b"]
    estimate = batches_per_epoch(corpus, batcher, "en")
    examples = list(corpus(nlp))
    counts = set()
    for seed in range(20):
        random.Random(seed).shuffle(examples)
        counts.add(sum(1 for _ in batcher(examples)))
    assert all(abs(c - estimate) <= 1 for c in counts), (estimate, counts)
    assert math.isclose(estimate, sum(len(eg) for eg in examples) / 100, rel_tol=0.25)


def test_batch_count_with_a_random_augmenter_is_fixed(tmp_path):
    """context_mix.v1 cuts documents at random: the count reads the corpus with a fixed seed, so
    it does not depend on the random state before it, and leaves that state as it was."""
    import random

    from spacy_bert_ner import schedules

    docs = [make_doc(6) for _ in range(40)]
    DocBin(docs=docs).to_disk(tmp_path / "docs.spacy")
    config = {
        "@readers": "spacy.Corpus.v1",
        "path": str(tmp_path / "docs.spacy"),
        "gold_preproc": False,
        "augmenter": {"@augmenters": "spacy_bert_ner.context_mix.v1"},
    }
    corpus = registry.resolve({"corpus": config})["corpus"]
    batcher = registry.resolve({"b": {**BY_SEQUENCE, "size": 2}})["b"]
    counts = set()
    for seed in range(5):
        schedules._BATCHES_PER_EPOCH.clear()
        random.seed(seed)
        state = random.getstate()
        counts.add(batches_per_epoch(corpus, batcher, "en"))
        assert random.getstate() == state
    assert len(counts) == 1
    assert counts.pop() > len(docs) / 2  # the documents were cut


def test_empty_corpus_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.spacy"
    DocBin().to_disk(empty)
    with pytest.raises(ValueError, match="has no examples"):
        resolve_training({"paths.train": str(empty)})


def test_optimizer_built_outside_spacy_train_gets_a_constant_rate(tiny_bert):
    """nlp.initialize()/nlp.update() without an optimizer build it from the raw config, where the
    schedule's references to the training settings are not filled in."""
    from util import build_nlp

    nlp = build_nlp(tiny_bert)
    optimizer = nlp.create_optimizer()
    assert optimizer.learn_rate == pytest.approx(1e-4)
    assert learning_rates(optimizer)[:5] == [pytest.approx(1e-4)] * 5


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({}, "Epochs: 30 of 5 batches = 150 updates (max_epochs = 30 caps the 200 epochs"),
        ({"training.max_epochs.min_steps": 100}, "Epochs: 20 of 5 batches = 100 updates (enough"),
        ({"training.max_epochs.min_steps": 1}, "Epochs: 4 of 5 batches = 20 updates (min_epochs"),
    ],
)
def test_epochs_message_says_which_rule_decided(corpora, monkeypatch, overrides, message):
    """The run length is announced with its updates and the rule that set it, so a capped run
    does not read as if it made min_steps updates."""
    from spacy_bert_ner import schedules

    said: List[str] = []
    monkeypatch.setattr(schedules, "_announce", said.append)
    settings = {"paths.train": str(corpora["train40"]), "training.batcher": BY_SEQUENCE}
    resolve_training({**settings, **overrides})
    assert any(text.startswith(message) for text in said), said
