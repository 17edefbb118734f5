"""Registered optimizers: Adam with a separate learning rate for the layers trained from scratch."""

from typing import Tuple

from spacy.util import registry
from thinc.api import Optimizer
from thinc.optimizers import FloatOrSeq, KeyT
from thinc.types import FloatsXd


class HeadScaledAdam(Optimizer):
    """thinc's Adam, with the learning rate of thinc's own layers multiplied by `head_lr_scale`.

    The pretrained encoder (a PyTorch model inside a thinc shim) fine-tunes at the schedule's rate;
    the classifier head and the casing features start from random weights and are trained at a
    larger one. Parameters are told apart by their key: a PyTorch shim names its parameters by
    their module path ("encoder.layer.0.attention.self.query.weight"), thinc's layers by a bare
    name ("W", "b", "E").
    """

    __slots__ = ["head_lr_scale"]

    def __init__(self, learn_rate: FloatOrSeq, *, head_lr_scale: float = 1.0, **kwargs) -> None:
        super().__init__(learn_rate, **kwargs)
        self.head_lr_scale = head_lr_scale

    def __call__(
        self, key: KeyT, weights: FloatsXd, gradient: FloatsXd, *, lr_scale: float = 1.0
    ) -> Tuple[FloatsXd, FloatsXd]:
        if not is_pretrained_param(key):
            lr_scale *= self.head_lr_scale
        return super().__call__(key, weights, gradient, lr_scale=lr_scale)


def is_pretrained_param(key: KeyT) -> bool:
    """Whether an optimizer key names a parameter of a PyTorch model (the transformer)."""
    return "." in key[1]


@registry.optimizers("spacy_bert_ner.Adam.v1")
def make_head_scaled_adam(
    learn_rate: FloatOrSeq = 1e-4,
    *,
    head_lr_scale: float = 1.0,
    L2: FloatOrSeq = 0.01,
    beta1: FloatOrSeq = 0.9,
    beta2: FloatOrSeq = 0.999,
    eps: FloatOrSeq = 1e-8,
    grad_clip: FloatOrSeq = 1.0,
    L2_is_weight_decay: bool = True,
    use_averages: bool = False,
) -> Optimizer:
    """`Adam.v1` (AdamW with L2_is_weight_decay), plus `head_lr_scale`: the factor applied to the
    learning rate of everything that is not the pretrained transformer (the classifier and the
    casing features, trained from scratch). With head_lr_scale 1.0 it updates exactly as `Adam.v1`
    given the same settings; the defaults here are those of configs/bert_ner.cfg (learn_rate 1e-4,
    L2 0.01, no parameter averaging), not `Adam.v1`'s.
    """
    return HeadScaledAdam(
        learn_rate,
        head_lr_scale=head_lr_scale,
        L2=L2,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        grad_clip=grad_clip,
        L2_is_weight_decay=L2_is_weight_decay,
        use_averages=use_averages,
    )
