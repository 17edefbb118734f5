"""How long to train, and the learning rate over that run, derived from the training corpus.

A warmup-then-linear-decay schedule needs the number of training steps, and that depends on the
corpus size, the batcher, `max_epochs` and `max_steps`. Fixed numbers in the config fit one corpus
only: on a small corpus warmup then lasts for epochs and the rate never reaches 0; on a large one it
reaches 0 early and the remaining steps are wasted. Both functions here count the batches of one
epoch of the training corpus with the configured batcher instead, once per process:

- `spacy_bert_ner.epochs_for_corpus.v1` (the value of `[training.max_epochs]`): a fixed number of
  epochs, or, by default, enough epochs for a minimum number of updates, so that a small corpus gets
  more passes than a large one.
- `spacy_bert_ner.warmup_linear.v1` (the learning rate): linear warmup over a fraction of the run,
  then linear decay to 0 at its end, for any corpus, `max_epochs` and `max_steps`.
"""

import itertools
import math
import random
from typing import Any, Callable, Dict, Hashable, Iterable, Optional, Tuple, Union

import spacy
from spacy.training import Example
from spacy.util import registry
from thinc.schedules import warmup_linear as thinc_warmup_linear
from wasabi import msg

Corpus = Callable[[spacy.Language], Iterable[Example]]
Batcher = Callable[[Iterable[Example]], Iterable[Any]]

# Batches per epoch by corpus and batcher: `spacy train` resolves [training] twice (to initialize,
# then to train), and both the epochs and the schedule need the count.
_BATCHES_PER_EPOCH: Dict[Hashable, int] = {}
# What `_announce` said already, for the same reason.
_ANNOUNCED: set = set()
# The read and shuffle used for counting. spaCy reshuffles each epoch (and a random augmenter cuts
# the documents anew), and batch_by_words' count depends a little on the order (well under 1 % on
# CoNLL-2003), so any fixed read and shuffle is as good an estimate.
COUNT_SEED = 0


def batches_per_epoch(corpus: Corpus, batcher: Batcher, lang: str) -> int:
    """The number of batches `batcher` makes of one (shuffled) epoch of `corpus`, read with a
    blank `lang` pipeline as `spacy train` reads it (gold_preproc, max_length, limit included)."""
    key = _cache_key(corpus, batcher, lang)
    if key is not None and key in _BATCHES_PER_EPOCH:
        return _BATCHES_PER_EPOCH[key]
    # A random augmenter (context_mix.v1) cuts the documents differently on each read: count one
    # fixed read, and leave the random state training starts from as it was.
    state = random.getstate()
    random.seed(COUNT_SEED)
    try:
        examples = list(corpus(spacy.blank(lang)))
    finally:
        random.setstate(state)
    if not examples:
        path = getattr(corpus, "path", None)
        raise ValueError(
            f"[bert_ner] The training corpus{f' {path}' if path else ''} has no examples, so the "
            "number of training steps cannot be derived from it. Check [paths.train] (or "
            "--paths.train) and that the file holds annotated documents."
        )
    random.Random(COUNT_SEED).shuffle(examples)
    count = sum(1 for _ in batcher(examples))
    if key is not None:
        _BATCHES_PER_EPOCH[key] = count
    return count


def _cache_key(corpus: Corpus, batcher: Batcher, lang: str) -> Optional[Hashable]:
    """What the count depends on, for spaCy's file-based Corpus; None (never cached) otherwise."""
    path = getattr(corpus, "path", None)
    if path is None or not path.exists():
        return None
    stat = path.stat()
    settings: Tuple[Any, ...] = tuple(
        getattr(corpus, name, None) for name in ("gold_preproc", "max_length", "limit")
    )
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, settings, repr(batcher), lang)


def training_steps(n_batches: int, max_epochs: int, max_steps: int) -> int:
    """How many updates `spacy train` makes: `max_epochs` x the batches per epoch, or
    `max_steps` + 1 (its loop stops after step number `max_steps`), whichever ends first."""
    limits = []
    if max_epochs > 0:
        limits.append(max_epochs * n_batches)
    if max_steps > 0:
        limits.append(max_steps + 1)
    if not limits:
        raise ValueError(
            "[bert_ner] The learning-rate schedule needs to know where training ends, but neither "
            f"[training] max_epochs ({max_epochs}) nor max_steps ({max_steps}) limits it. Set "
            "max_epochs > 0 or max_steps > 0, or give the schedule fixed steps with thinc's "
            "`warmup_linear.v1`."
        )
    return min(limits)


@registry.misc("spacy_bert_ner.epochs_for_corpus.v1")
def epochs_for_corpus(
    corpus: Corpus,
    batcher: Batcher,
    lang: str,
    epochs: int = 0,
    min_steps: int = 1000,
    min_epochs: int = 4,
    max_epochs: int = 30,
) -> int:
    """The number of training epochs: `epochs` when it is > 0; otherwise (the default) enough
    epochs for at least `min_steps` updates, and no fewer than `min_epochs` nor more than
    `max_epochs`. A corpus of 1,000 sentences (~30 batches of 500 words) then trains for 30
    epochs; CoNLL-2003 (~480 batches) for 4; a larger corpus for 4 too. The defaults are those of
    configs/bert_ner.cfg.

    corpus (Callable): The training corpus reader, `${corpora.train}`.
    batcher (Callable): The training batcher, `${training.batcher}`.
    lang (str): The pipeline's language, `${nlp.lang}`: the corpus is read with its tokenizer.
    epochs (int): A fixed number of epochs; 0 = derived from the corpus as above.
    """
    if epochs > 0:
        return epochs
    if not 0 < min_epochs <= max_epochs:
        raise ValueError(
            f"[bert_ner] epochs_for_corpus needs 0 < min_epochs <= max_epochs, got "
            f"min_epochs={min_epochs}, max_epochs={max_epochs}."
        )
    n_batches = batches_per_epoch(corpus, batcher, lang)
    needed = math.ceil(min_steps / n_batches)
    chosen = max(min_epochs, min(max_epochs, needed))
    why = (
        f"max_epochs = {max_epochs} caps the {needed} epochs that {min_steps} updates need"
        if needed > max_epochs
        else f"min_epochs = {min_epochs}"
        if needed < min_epochs
        else f"enough for min_steps = {min_steps} updates"
    )
    _announce(f"Epochs: {chosen} of {n_batches} batches = {chosen * n_batches} updates ({why})")
    return chosen


@registry.schedules("spacy_bert_ner.warmup_linear.v1")
def warmup_linear(
    initial_rate: float,
    corpus: Union[Corpus, str],
    batcher: Union[Batcher, str],
    lang: str,
    max_epochs: Union[int, str],
    max_steps: Union[int, str],
    warmup_fraction: float = 0.1,
) -> Iterable[float]:
    """Linear warmup from 0 to `initial_rate` over the first `warmup_fraction` of the updates,
    then linear decay, reaching 0 right after the last update (the rate of update `i`, counted
    from 0, is `initial_rate * (total - i) / (total - warmup)` once warm), as thinc's
    `warmup_linear.v1` and transformers' `get_linear_schedule_with_warmup`, with the number of
    updates counted from the training corpus, the batcher, `max_epochs` and `max_steps`.

    max_epochs (int): `${training.max_epochs}`.
    max_steps (int): `${training.max_steps}`.

    spaCy also builds the optimizer outside `spacy train`, from the config as written, when
    `nlp.initialize()` or `nlp.update()` get no optimizer of their own: the references above are
    then not filled in (they arrive as the strings "${...}"), no run length is known, and nothing
    steps the schedule, so it gives `initial_rate`, constant.
    """
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(
            f"[bert_ner] warmup_fraction must be in [0, 1), got {warmup_fraction}: it is the "
            "share of the training steps spent warming up."
        )
    run = _run_steps(corpus, batcher, lang, max_epochs, max_steps)
    if run is None:
        return itertools.repeat(initial_rate)
    n_batches, total = run
    assert isinstance(max_epochs, int) and isinstance(max_steps, int)
    warmup = round(warmup_fraction * total)
    _announce(
        f"Learning rate: warmup to {initial_rate:g} over {warmup} steps, then linear decay to 0 "
        f"at step {total} ({_run_length(n_batches, max_epochs, max_steps, total)})"
    )
    return thinc_warmup_linear(initial_rate, warmup, total)


def _run_steps(
    corpus: Union[Corpus, str],
    batcher: Union[Batcher, str],
    lang: str,
    max_epochs: Union[int, str],
    max_steps: Union[int, str],
) -> Optional[Tuple[int, int]]:
    """(batches per epoch, updates of the run), or None when the config was resolved outside
    `spacy train` (the references to [training] arrive as the strings "${...}")."""
    if any(isinstance(value, str) for value in (corpus, batcher, max_epochs, max_steps)):
        return None
    assert callable(corpus) and callable(batcher)
    assert isinstance(max_epochs, int) and isinstance(max_steps, int)
    n_batches = batches_per_epoch(corpus, batcher, lang) if max_epochs > 0 else 0
    return n_batches, training_steps(n_batches, max_epochs, max_steps)


def _run_length(n_batches: int, max_epochs: int, max_steps: int, total: int) -> str:
    if max_epochs > 0 and total == max_epochs * n_batches:
        return f"{max_epochs} epochs x {n_batches} batches"
    return f"max_steps = {max_steps}"


def _announce(text: str) -> None:
    """Say how training was sized, once per process (the config is resolved more than once)."""
    if text not in _ANNOUNCED:
        _ANNOUNCED.add(text)
        msg.info(text)


@registry.misc("spacy_bert_ner.eval_frequency.v1")
def eval_frequency(
    corpus: Union[Corpus, str],
    batcher: Union[Batcher, str],
    lang: str,
    max_epochs: Union[int, str],
    max_steps: Union[int, str],
    every: int = 0,
    evaluations: int = 10,
) -> int:
    """How often `spacy train` scores the dev set (the value of `[training.eval_frequency]`):
    every `every` updates when it is > 0; otherwise (the default) about `evaluations` times over
    the run, its length counted as the learning-rate schedule counts it, so that a short run is
    scored as often as a long one. (spaCy scores after update 0, then after every multiple of the
    frequency; the logger `spacy_bert_ner.JSONLLogger.v2` scores the final state when the run
    does not end on a multiple.)

    every (int): A fixed frequency in updates; 0 = derived from the run length.
    evaluations (int): How many evaluations a derived frequency aims at.
    """
    if every > 0:
        return every
    if evaluations < 1:
        raise ValueError(
            f"[bert_ner] eval_frequency needs evaluations >= 1 (or every > 0), got {evaluations}."
        )
    run = _run_steps(corpus, batcher, lang, max_epochs, max_steps)
    if run is None:  # resolved outside `spacy train`: spaCy's default frequency
        return 200
    _, total = run
    frequency = max(1, math.ceil(total / evaluations))
    _announce(
        f"Dev evaluations: every {frequency} updates of {total}, and the final state "
        f"(--training.eval_frequency.every N fixes it)"
    )
    return frequency
