"""The component's training losses: per-token cross-entropy against the gold tags (`gold_loss`),
against gold tags mixed with teacher probabilities (`mixed_targets`, `soft_target_loss`), and the
CRF's sequence-level loss (`crf_sequence_loss`).

Each takes the classifier's tag probabilities (the softmax's output, one row per token, the docs
one after another) and returns the summed loss and its gradient with respect to the softmax's
input, which is what thinc's `Softmax_v2` backpropagates (its backward pass passes the gradient
through, as thinc's losses expect). Logs of probabilities are taken in one place (`log_probs`,
floored at `decoding.MIN_PROB`, as decoding floors them), and a loss is checked in one place
(`check_loss`).
"""

from typing import Sequence, Tuple

import numpy
from thinc.api import CategoricalCrossentropy, Model, get_array_module, to_numpy
from thinc.types import Floats2d, Ints1d

from .crf import add_transition_gradient, crf_loss, transition_scores
from .decoding import MIN_PROB, Constraints
from .gold import MISSING

# thinc's cross-entropy over integer gold tags, unnormalized (the component's loss is a sum over
# tokens, as spaCy's `ner` sums), tokens with MISSING gold masked out: its gradient is
# p - onehot(gold) on annotated tokens, 0 elsewhere.
GOLD_CROSS_ENTROPY = CategoricalCrossentropy(normalize=False, missing_value=MISSING)


def log_probs(probs: Floats2d) -> Floats2d:
    """log(probs), each probability floored at MIN_PROB: a zero becomes very unlikely, not an
    infinite loss."""
    xp = get_array_module(probs)
    return xp.log(xp.maximum(probs, MIN_PROB))


def check_loss(loss: float, name: str) -> float:
    """The loss, or an error where training has diverged (a NaN loss)."""
    if numpy.isnan(loss):
        raise ValueError(f"[bert_ner] NaN loss in '{name}': lower the learning rate.")
    return loss


def gold_loss(probs: Floats2d, gold: Ints1d) -> Tuple[float, Floats2d]:
    """Cross-entropy against the gold tags: -sum(log p[gold]) over the tokens whose gold tag is
    known (`gold` >= 0; MISSING tokens carry no loss), and its gradient, thinc's
    `CategoricalCrossentropy`'s. (thinc's `get_loss` is the sum of the squared gradient, not the
    cross-entropy, so the loss itself is computed here.)"""
    xp = get_array_module(probs)
    d_probs = GOLD_CROSS_ENTROPY.get_grad(probs, gold)
    rows = xp.nonzero(gold >= 0)[0]
    loss = -float(xp.sum(log_probs(probs[rows, gold[rows]])))
    return loss, d_probs


def mixed_targets(gold: Ints1d, teacher: numpy.ndarray, teacher_weight: float) -> numpy.ndarray:
    """Each token's target distribution over the tags (on the host): its gold tag (one-hot),
    mixed with the teacher's probabilities (`distillation`; NaN rows where a token has none) as
    (1 - teacher_weight) * gold + teacher_weight * teacher; teacher_weight * teacher alone where
    the gold tag is missing, and all zero where neither is known."""
    gold_ids = to_numpy(gold).astype("int64")
    targets = numpy.zeros(teacher.shape, dtype="float32")
    rows = numpy.nonzero(gold_ids >= 0)[0]
    targets[rows, gold_ids[rows]] = 1.0
    taught = ~numpy.isnan(teacher).any(axis=1)
    targets[taught] = (1.0 - teacher_weight) * targets[taught] + teacher_weight * teacher[taught]
    return targets


def soft_target_loss(probs: Floats2d, targets: numpy.ndarray) -> Tuple[float, Floats2d]:
    """Cross-entropy against target distributions: -sum(t * log p), and its gradient
    p * sum(t) - t (per row).

    Not thinc's `CategoricalCrossentropy`: its gradient, p - t, is this one only where each
    target row sums to 1, and the rows here need not: a token without gold annotation trains
    towards teacher_weight * teacher (a row summing to teacher_weight), and the teachers'
    probabilities are stored as float16, whose rows miss 1 by up to about 1e-3 (which thinc's
    check that every target is at most 1 can also reject)."""
    xp = get_array_module(probs)
    t = xp.asarray(targets, dtype="float32")
    loss = -float((t * log_probs(probs)).sum())
    d_probs = probs * t.sum(axis=1, keepdims=True) - t
    return loss, d_probs


def crf_sequence_loss(
    probs: Floats2d,
    lengths: Sequence[int],
    gold: Ints1d,
    transitions: Model,
    constraints: Constraints,
) -> Tuple[float, Floats2d]:
    """The CRF's negative log-likelihood of each doc's gold tags (`crf.crf_loss`, the
    log-probabilities as emission scores), and its gradient for the emissions. The transitions'
    own gradient is added to the `transitions` layer (`crf.Transitions`) here, as they have no
    input to backpropagate through."""
    loss, d_scores, d_transitions = crf_loss(
        log_probs(probs), lengths, gold, transition_scores(transitions), constraints
    )
    add_transition_gradient(transitions, d_transitions)
    return loss, d_scores
