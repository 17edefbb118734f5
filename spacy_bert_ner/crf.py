"""A linear-chain CRF over the classifier's tag probabilities: the learned transition scores (a
thinc layer, so they are saved and updated with the model) and the sequence-level loss that trains
them together with the classifier. Decoding with the transitions is `decoding.viterbi`'s.

The classifier's log-probabilities are the CRF's emission scores. A sequence's score is the sum of
its tags' emission scores and of the transition scores between consecutive tags; the scheme's
invalid transitions (BILUO: no I- after O, ...) are excluded both from training and from
decoding. A log-softmax differs from the logits by one constant per token, which cancels out of
the CRF's probabilities, so the gradient with respect to the log-probabilities is also the
gradient with respect to the softmax's input, what the component returns from `get_loss`.
"""

from typing import Callable, List, Optional, Sequence, Tuple, Union, cast

import numpy
import torch
from thinc.api import Model, get_array_module, to_numpy, torch2xp, xp2torch
from thinc.types import Floats2d, Ints1d

from .decoding import Constraints

# The score given to an invalid transition, start or end: finite, so that every gradient stays
# defined (exp(-1e4) is 0 in float32).
FORBIDDEN = -1e4


def Transitions(
    nO: Optional[int] = None, rate_scale: float = 1.0
) -> Model[List[Floats2d], List[Floats2d]]:
    """A layer that passes the tag probabilities through unchanged and holds the CRF's
    transition scores (`transition_scores`): nO x nO, [i, j] the score of tag j following tag i,
    starting at 0 (no preference; only the scheme's constraints).

    rate_scale (float): How many times faster than the other layers of the classifier the
        scores learn. Adam moves a weight by about its learning rate per step, whatever the
        gradient's size, so the layer stores the scores divided by this factor (param "T").
    """
    if rate_scale <= 0:
        raise ValueError(f"[bert_ner] crf_rate_scale must be above 0, got {rate_scale}.")
    return Model(
        "crf_transitions",
        _forward,
        init=_init,
        dims={"nO": nO},
        params={"T": None},
        attrs={"rate_scale": float(rate_scale)},
    )


def transition_scores(layer: Model) -> Floats2d:
    """The transition scores of a `Transitions` layer."""
    return cast(Floats2d, layer.get_param("T") * layer.attrs["rate_scale"])


def add_transition_gradient(layer: Model, d_scores: Floats2d) -> None:
    """Add the gradient of the transition scores (from `crf_loss`) to a `Transitions` layer."""
    layer.inc_grad("T", d_scores * layer.attrs["rate_scale"])


def _init(
    model: Model, X: Optional[List[Floats2d]] = None, Y: Optional[List[Floats2d]] = None
) -> None:
    if not model.has_dim("nO") and X:
        model.set_dim("nO", X[0].shape[1])
    n_tags = model.get_dim("nO")
    model.set_param("T", model.ops.alloc2f(n_tags, n_tags))


def _forward(
    model: Model, X: List[Floats2d], is_train: bool
) -> Tuple[List[Floats2d], Callable[[List[Floats2d]], List[Floats2d]]]:
    # The transitions get their gradient from `crf_loss` (they do not act on the input).
    return X, lambda dY: dY


def crf_loss(
    log_probs: Floats2d,
    lengths: Union[Ints1d, Sequence[int]],
    gold: Ints1d,
    transitions: Floats2d,
    constraints: Constraints,
) -> Tuple[float, Floats2d, Floats2d]:
    """The CRF's negative log-likelihood of the gold tags, summed over sequences, and its
    gradients with respect to the emission scores and to the transitions.

    log_probs (Floats2d): Emission scores, one row per token, the sequences one after another.
    lengths (Union[Ints1d, Sequence[int]]): The number of tokens of each sequence.
    gold (Ints1d): The gold tag of each token, -1 where it is missing: the likelihood is then that
        of the annotated tags, summed over every valid tag of the missing tokens.
    transitions (Floats2d): The learned transition scores (n_tags x n_tags).
    constraints (Constraints): The scheme's valid starts, transitions and ends.
    RETURNS (Tuple[float, Floats2d, Floats2d]): The loss; the gradient for each token's emission
        scores, the CRF's marginal probability of each tag minus that under the gold tags; and
        the gradient for the transitions, the expected minus the gold number of each
        transition. Arrays come back on the device of `log_probs`.
    """
    emissions = xp2torch(log_probs, requires_grad=True)
    scores = xp2torch(transitions, requires_grad=True)
    n_tags = emissions.shape[1]
    device = emissions.device
    lengths_t = torch.as_tensor(numpy.asarray(to_numpy(lengths), dtype="int64"), device=device)
    gold_t = torch.as_tensor(numpy.asarray(to_numpy(gold), dtype="int64"), device=device)
    lengths_t = lengths_t[lengths_t > 0]
    if not len(lengths_t):
        xp = get_array_module(log_probs)
        return 0.0, xp.zeros_like(log_probs), xp.zeros_like(transitions)
    # Sequences padded to the longest: row index of token t of sequence b, and which are real.
    starts = torch.cumsum(lengths_t, 0) - lengths_t
    positions = torch.arange(int(lengths_t.max()), device=device)
    active = positions[None, :] < lengths_t[:, None]
    rows = torch.where(active, starts[:, None] + positions[None, :], 0)
    padded = emissions[rows]
    # The gold tags as a mask on the emissions: only the gold tag of an annotated token.
    gold_rows = gold_t[rows]
    not_gold = (gold_rows[..., None] >= 0) & (
        gold_rows[..., None] != torch.arange(n_tags, device=device)
    )
    gold_padded = padded.masked_fill(not_gold, FORBIDDEN)
    both = torch.cat([padded, gold_padded])
    both_active = torch.cat([active, active])
    log_z = _log_partition(both, both_active, scores, constraints)
    n_seqs = len(lengths_t)
    all_paths, gold_paths = log_z[:n_seqs], log_z[n_seqs:]
    loss = (all_paths - gold_paths).sum()
    loss.backward()
    assert emissions.grad is not None and scores.grad is not None
    d_emissions = cast(Floats2d, torch2xp(emissions.grad))
    d_transitions = cast(Floats2d, torch2xp(scores.grad))
    return float(loss.item()), d_emissions, d_transitions


def _log_partition(
    emissions: torch.Tensor,
    active: torch.Tensor,
    transitions: torch.Tensor,
    constraints: Constraints,
) -> torch.Tensor:
    """The forward algorithm: log of the summed exp-scores of every valid tag sequence, for each
    of the padded sequences in `emissions` (n_seqs x max_length x n_tags)."""
    device = emissions.device

    def allowed(mask: numpy.ndarray) -> torch.Tensor:
        return torch.as_tensor(mask, device=device)

    step = torch.where(allowed(constraints.allowed), transitions, FORBIDDEN)
    start = torch.where(allowed(constraints.start), 0.0, FORBIDDEN)
    end = torch.where(allowed(constraints.end), 0.0, FORBIDDEN)
    alpha = emissions[:, 0] + start
    for t in range(1, emissions.shape[1]):
        after = torch.logsumexp(alpha[:, :, None] + step, dim=1) + emissions[:, t]
        alpha = torch.where(active[:, t, None], after, alpha)
    return torch.logsumexp(alpha + end, dim=1)
