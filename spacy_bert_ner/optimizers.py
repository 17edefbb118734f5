"""Registered optimizers: Adam with a separate learning rate for the layers trained from scratch,
which on a GPU updates all of a model's parameters in one step of torch's multi-tensor ("foreach")
operations.
"""

from collections import defaultdict
from typing import Dict, List, Tuple

import numpy
import torch
from spacy.util import registry
from thinc.api import Model, Optimizer, PyTorchShim
from thinc.optimizers import FloatOrSeq, KeyT
from thinc.types import ArrayXd, FloatsXd

# One parameter for `HeadScaledAdam.update_all`: its optimizer key, its weights and its gradient.
TorchParam = Tuple[KeyT, torch.Tensor, torch.Tensor]

# `update_all` only runs on a GPU by default: on CPU, thinc's per-parameter Adam is a fused C loop
# and as fast (10 ms per step either way for the issue-12 proxy's parameters, one thread).
UPDATE_ALL_ON_CPU = False


class HeadScaledAdam(Optimizer):
    """thinc's Adam, with the learning rate of thinc's own layers multiplied by `head_lr_scale`.

    The pretrained encoder (a PyTorch model inside a thinc shim) fine-tunes at the schedule's rate;
    the classifier head and the casing features start from random weights and are trained at a
    larger one. Parameters are told apart by their key: a PyTorch shim names its parameters by
    their module path ("encoder.layer.0.attention.self.query.weight"), thinc's layers by a bare
    name ("W", "b", "E").
    """

    __slots__ = ["head_lr_scale", "_moments"]

    def __init__(self, learn_rate: FloatOrSeq, *, head_lr_scale: float = 1.0, **kwargs) -> None:
        super().__init__(learn_rate, **kwargs)
        self.head_lr_scale = head_lr_scale
        # Adam's moments of the parameters updated by `update_all`, as torch tensors.
        self._moments: Dict[KeyT, Tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def can_update_all(self) -> bool:
        """Whether `update_all` implements these settings (AdamW, without parameter averages)."""
        return (
            self.b1 > 0.0
            and self.b2 > 0.0
            and not self.use_radam
            and (self.L2 == 0 or self.L2_is_weight_decay)
            and self.averages is None
        )

    def update_all(self, params: List[TorchParam]) -> None:
        """Update many parameters at once, in place, with the arithmetic of thinc's Adam
        (`Optimizer.__call__`: per-parameter gradient clipping, Adam with thinc's bias correction,
        then decoupled weight decay), and zero their gradients.

        thinc's Adam runs once per parameter: on a GPU each call launches several kernels and
        waits for the clipping norm (a host-device synchronisation per parameter, about 120 per
        step with MiniLM); here one multi-tensor operation covers all parameters of a group. On
        an H100 that made training 1.8x faster (BENCHMARKS.md, issue 12).
        """
        groups: Dict[Tuple[int, float], List[TorchParam]] = defaultdict(list)
        for key, weights, gradient in params:
            if len(gradient) < 1:
                continue
            self.nr_update[key] += 1
            scale = 1.0 if is_pretrained_param(key) else self.head_lr_scale
            groups[(self.nr_update[key], scale)].append((key, weights, gradient))
        for (nr_upd, lr_scale), group in groups.items():
            self._update_group(group, nr_upd, lr_scale)

    def _update_group(self, group: List[TorchParam], nr_upd: int, lr_scale: float) -> None:
        weights = [w for _, w, _ in group]
        grads = [g for _, _, g in group]
        for key, w, _ in group:
            if key not in self._moments:
                self._moments[key] = (torch.zeros_like(w), torch.zeros_like(w))
        mom1 = [self._moments[key][0] for key, _, _ in group]
        mom2 = [self._moments[key][1] for key, _, _ in group]
        if self.grad_clip:
            # thinc: if norm >= clip: gradient *= clip / norm. A factor capped at 1 does the same
            # without reading the norms back to the host.
            norms = torch.stack(torch._foreach_norm(grads))
            factors = torch.clamp(self.grad_clip / norms, max=1.0)
            torch._foreach_mul_(grads, list(factors.unbind(0)))
        b1, b2 = self.b1, self.b2
        lr = self.learn_rate * (1.0 - b2**nr_upd) ** 0.5 / (1.0 - b1**nr_upd)
        torch._foreach_mul_(mom1, b1)
        torch._foreach_add_(mom1, grads, alpha=1.0 - b1)
        torch._foreach_mul_(mom2, b2)
        torch._foreach_addcmul_(mom2, grads, grads, value=1.0 - b2)
        denominators = torch._foreach_sqrt(mom2)
        torch._foreach_add_(denominators, self.eps)
        torch._foreach_addcdiv_(weights, mom1, denominators, value=-lr * lr_scale)
        torch._foreach_zero_(grads)
        if self.L2 != 0:
            torch._foreach_mul_(weights, 1.0 - lr_scale * self.learn_rate * self.L2)

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


def update_all(model: Model, optimizer: Optimizer) -> bool:
    """`model.finish_update(optimizer)` as one `HeadScaledAdam.update_all` step over every
    parameter of the model: its thinc layers' and those of the PyTorch models in its shims, on a
    GPU. Returns False, having changed nothing, on CPU or where the optimizer cannot (the caller
    then calls `finish_update` as usual)."""
    if not isinstance(optimizer, HeadScaledAdam) or not optimizer.can_update_all:
        return False
    if model.ops.device_type != "gpu" and not UPDATE_ALL_ON_CPU:
        return False
    params: List[TorchParam] = []
    scalers = []
    for node in model.walk():
        for shim in node.shims:
            if not isinstance(shim, PyTorchShim):
                shim.finish_update(optimizer)
                continue
            # As PyTorchShim.finish_update: skip the step when mixed precision overflowed.
            scaler = shim._grad_scaler
            scalers.append(scaler)
            for name, param in shim._model.named_parameters():
                if param.grad is None:
                    continue
                if scaler.found_inf:
                    param.grad.zero_()
                else:
                    params.append(((shim.id, name), param.data, param.grad))
    for node in model.walk():
        for name in node.param_names:
            if node.has_grad(name):
                weights, gradient = node.get_param(name), node.get_grad(name)
                params.append(((node.id, name), _shared_tensor(weights), _shared_tensor(gradient)))
    optimizer.update_all(params)
    for scaler in scalers:
        scaler.update()
    return True


def _shared_tensor(array: ArrayXd) -> torch.Tensor:
    """A torch tensor over the same memory as a numpy or cupy array (updated in place)."""
    if isinstance(array, numpy.ndarray):
        return torch.from_numpy(array)
    return torch.from_dlpack(array)
