"""thinc's Adam arithmetic over many torch tensors at once, for `optimizers.HeadScaledAdam`:
per-tensor gradient clipping (`clip_gradients`), the Adam step (`adam_step`), weight decay and
parameter averages (`scale_`, `lerp_`), clearing gradients (`zero_`), and torch views of thinc's
arrays (`shared_tensor`, `xp_view`).

thinc's Adam runs once per parameter: on a GPU each call launches several kernels and waits for
the clipping norm (a host-device synchronisation per parameter, about 120 per step with MiniLM).
Here each operation is one call over a list of tensors. The Adam step is torch's public
functional Adam (`torch.optim.adam.adam`, the step of `torch.optim.Adam`), with its fused kernel
where torch has one for the tensors. The other operations use torch's multi-tensor functions
(`torch._foreach_*`, one kernel launch for a whole list, as torch's own optimizers use them),
which are private API: they are used where this torch has them (`FOREACH`), and otherwise the
same arithmetic runs tensor by tensor with public tensor methods (tests/test_optimizers.py runs
both).
"""

from typing import List, Sequence, Union, cast

import numpy
import torch
from thinc.types import ArrayXd, FloatsXd
from torch.optim.adam import adam as functional_adam

# Whether this torch has the (private) multi-tensor functions used here.
FOREACH = all(hasattr(torch, f"_foreach_{op}") for op in ("mul_", "norm", "lerp_", "zero_"))


def _torch_version() -> tuple:
    return tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


# Where torch has a fused Adam kernel: CUDA since torch 2.0, CPU since torch 2.4. Elsewhere
# `adam_step` lets torch choose its multi-tensor or per-tensor implementation.
FUSED_DEVICES = ("cpu", "cuda") if _torch_version() >= (2, 4) else ("cuda",)
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def adam_step(
    weights: List[torch.Tensor],
    grads: List[torch.Tensor],
    mom1: List[torch.Tensor],
    mom2: List[torch.Tensor],
    *,
    nr_upd: int,
    learn_rate: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """thinc's Adam step (`Optimizer._adam`, without weight decay: thinc decays after the step)
    for many parameters, in place, by torch's functional Adam.

    thinc folds both bias corrections into the learning rate and adds eps to sqrt(mom2):
        w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
    torch divides sqrt(mom2) by its correction before adding eps:
        w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps')
    which is the same step with eps' = eps / sqrt(1 - b2^t).
    """
    device = weights[0].device
    fused = device.type in FUSED_DEVICES and all(w.dtype in FUSED_DTYPES for w in weights)
    # torch's Adam counts the steps itself (it adds 1 before the step), one tensor per parameter:
    # on the parameters' device for the fused kernel, on the host otherwise (as torch.optim.Adam).
    steps = torch.full((len(weights),), float(nr_upd - 1), device=device if fused else "cpu")
    functional_adam(
        weights,
        grads,
        mom1,
        mom2,
        [],
        list(steps.unbind(0)),
        # Otherwise torch's choice, as torch.optim.Adam's: multi-tensor on a GPU.
        fused=True if fused else None,
        amsgrad=False,
        beta1=beta1,
        beta2=beta2,
        lr=learn_rate,
        weight_decay=0.0,
        eps=eps / (1.0 - beta2**nr_upd) ** 0.5,
        maximize=False,
    )


def clip_gradients(grads: List[torch.Tensor], clip: float) -> None:
    """thinc's gradient clipping, each gradient on its own: if norm >= clip, gradient *= clip /
    norm. On CPU only the clipped gradients are multiplied; on a GPU all are, by a factor capped
    at 1, so that the norms are not read back to the host."""
    norms = _norms(grads)
    if grads[0].device.type == "cpu":
        clipped = [(g, clip / n) for g, n in zip(grads, norms.tolist()) if n >= clip]
        if clipped:
            scale_([g for g, _ in clipped], [factor for _, factor in clipped])
    else:
        factors = torch.clamp(clip / norms, max=1.0)
        scale_(grads, list(factors.unbind(0)))


def _norms(tensors: List[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of each tensor, as one tensor."""
    if FOREACH:
        return torch.stack(torch._foreach_norm(tensors))
    return torch.stack([torch.linalg.vector_norm(t) for t in tensors])


def scale_(
    tensors: List[torch.Tensor], factors: Union[float, Sequence[Union[float, torch.Tensor]]]
) -> None:
    """tensor *= factor, in place, with one factor for all tensors or one per tensor."""
    if FOREACH:
        torch._foreach_mul_(tensors, factors)  # type: ignore[arg-type]
        return
    per_tensor = factors if isinstance(factors, Sequence) else [factors] * len(tensors)
    for tensor, factor in zip(tensors, per_tensor):
        tensor.mul_(factor)


def lerp_(starts: List[torch.Tensor], ends: List[torch.Tensor], weight: float) -> None:
    """start += weight * (end - start), in place."""
    if FOREACH:
        torch._foreach_lerp_(starts, ends, weight)
        return
    for start, end in zip(starts, ends):
        start.lerp_(end, weight)


def zero_(tensors: List[torch.Tensor]) -> None:
    """tensor = 0, in place."""
    if FOREACH:
        torch._foreach_zero_(tensors)
        return
    for tensor in tensors:
        tensor.zero_()


def xp_view(tensor: torch.Tensor) -> FloatsXd:
    """A numpy or cupy array over the same memory as a torch tensor."""
    if tensor.device.type == "cpu":
        return cast(FloatsXd, tensor.numpy())
    import cupy

    return cast(FloatsXd, cupy.from_dlpack(tensor))


def shared_tensor(array: ArrayXd) -> torch.Tensor:
    """A torch tensor over the same memory as a numpy or cupy array (updated in place)."""
    if isinstance(array, numpy.ndarray):
        return torch.from_numpy(array)
    return torch.from_dlpack(array)
