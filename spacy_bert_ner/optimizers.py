"""Registered optimizers: Adam with a separate learning rate for the layers trained from scratch
(and, in v2, a learning rate that decays from the encoder's top layer down), which updates all of
a model's parameters at once (`update_all`), with thinc's Adam arithmetic computed by torch over
all the tensors together (`multi_tensor`).
"""

import re
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, cast

import torch
from spacy.util import registry
from thinc.api import Model, Optimizer, PyTorchShim
from thinc.optimizers import FloatOrSeq, KeyT
from thinc.types import FloatsXd

from .multi_tensor import adam_step, clip_gradients, lerp_, scale_, shared_tensor, xp_view, zero_

# One parameter for `HeadScaledAdam.update_all`: its optimizer key, its weights and its gradient.
TorchParam = Tuple[KeyT, torch.Tensor, torch.Tensor]

# The layer of a transformer parameter: "encoder.layer.3.attention.self.query.weight" (BERT,
# RoBERTa), "transformer.layer.3.ffn.lin1.weight" (DistilBERT).
LAYER_INDEX = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


class HeadScaledAdam(Optimizer):
    """thinc's Adam, with the learning rate of thinc's own layers multiplied by `head_lr_scale`
    (and, from `spacy_bert_ner.Adam.v2`, the encoder's by a factor per layer, `layer_lr_decay`,
    and parameter averages that cover the encoder: `average_encoder`).

    The pretrained encoder (a PyTorch model inside a thinc shim) fine-tunes at the schedule's rate;
    the classifier head and the casing features start from random weights and are trained at a
    larger one. Parameters are told apart by their key: a PyTorch shim names its parameters by
    their module path ("encoder.layer.0.attention.self.query.weight"), thinc's layers by a bare
    name ("W", "b", "E").
    """

    __slots__ = [
        "head_lr_scale",
        "layer_lr_decay",
        "average_encoder",
        "_moments",
        "_layer_scales",
        "_average_tensors",
    ]

    def __init__(
        self,
        learn_rate: FloatOrSeq,
        *,
        head_lr_scale: float = 1.0,
        layer_lr_decay: float = 1.0,
        average_encoder: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(learn_rate, **kwargs)
        if not 0.0 < layer_lr_decay <= 1.0:
            raise ValueError(
                f"[bert_ner] layer_lr_decay must be in (0, 1], got {layer_lr_decay}: 1 trains "
                "every encoder layer at the same rate, 0.8 each layer at 0.8 times the rate of "
                "the layer above."
            )
        self.head_lr_scale = head_lr_scale
        self.layer_lr_decay = layer_lr_decay
        self.average_encoder = average_encoder
        if self.needs_update_all and not self.can_update_all:
            raise ValueError(
                "[bert_ner] layer_lr_decay below 1 and use_averages need Adam with decoupled "
                "weight decay (L2_is_weight_decay = true, or L2 = 0)."
            )
        # Adam's moments of the parameters updated by `update_all`, as torch tensors.
        self._moments: Dict[KeyT, Tuple[torch.Tensor, torch.Tensor]] = {}
        # The layer-wise factor of each encoder parameter, by optimizer key.
        self._layer_scales: Dict[KeyT, float] = {}
        # The parameter averages kept by `update_all`, as torch tensors (`self.averages` holds
        # numpy or cupy views of the same memory, under the keys `Model.use_params` looks up).
        self._average_tensors: Dict[KeyT, torch.Tensor] = {}

    @property
    def needs_update_all(self) -> bool:
        """Whether these settings need `update_all`, which transformer architectures other than
        ours do not call: thinc's Adam, called once per parameter, cannot see how many layers
        the encoder has, and keeps the encoder's averages under keys its PyTorch shim never
        reads (`Model.use_params` would apply the averages of thinc's layers only)."""
        return self.layer_lr_decay != 1.0 or (self.averages is not None and self.average_encoder)

    @property
    def can_update_all(self) -> bool:
        """Whether `update_all` implements these settings (AdamW; parameter averages only with
        `average_encoder`)."""
        return (
            self.b1 > 0.0
            and self.b2 > 0.0
            and not self.use_radam
            and (self.L2 == 0 or self.L2_is_weight_decay)
            and (self.averages is None or self.average_encoder)
        )

    def update_all(self, params: List[TorchParam]) -> None:
        """Update many parameters at once, in place, with the arithmetic of thinc's Adam
        (`Optimizer.__call__`: per-parameter gradient clipping, Adam with thinc's bias correction,
        then decoupled weight decay). The gradients are clipped in place; clearing them is the
        caller's (`update_all`).

        thinc's Adam runs once per parameter: on a GPU each call launches several kernels and
        waits for the clipping norm (a host-device synchronisation per parameter, about 120 per
        step with MiniLM), on CPU its C loop is not vectorized; here the clipping is one
        multi-tensor operation and Adam one call of torch's Adam (its fused kernel where there is
        one) over all parameters of a group (`multi_tensor`). On an H100 the multi-tensor step
        made training 1.8x faster; on CPU the fused kernel takes a quarter of thinc's time.
        """
        self._learn_layer_scales([key for key, _, _ in params])
        groups: Dict[Tuple[int, float], List[TorchParam]] = defaultdict(list)
        for key, weights, gradient in params:
            if len(gradient) < 1:
                continue
            self.nr_update[key] += 1
            groups[(self.nr_update[key], self.lr_scale(key))].append((key, weights, gradient))
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
            clip_gradients(grads, self.grad_clip)
        adam_step(
            weights,
            grads,
            mom1,
            mom2,
            nr_upd=nr_upd,
            learn_rate=self.learn_rate * lr_scale,
            beta1=self.b1,
            beta2=self.b2,
            eps=self.eps,
        )
        if self.L2 != 0:
            scale_(weights, 1.0 - lr_scale * self.learn_rate * self.L2)
        if self.averages is not None:
            self._update_averages(group, weights, nr_upd)

    def average_unchanged(self, key: KeyT, weights: torch.Tensor) -> None:
        """Give a parameter not updated yet (no gradient: a BERT pooler) its weights as average,
        since `PyTorchShim.use_params` loads all of a model's parameters or none."""
        if self.averages is not None and key not in self._average_tensors:
            self._set_average(key, weights)

    def _set_average(self, key: KeyT, average: torch.Tensor) -> None:
        # thinc types the averages' keys as optimizer keys; PyTorchShim.use_params reads strings.
        averages = cast(Dict[Any, FloatsXd], self.averages)
        averages[average_key(key)] = xp_view(average)

    def _update_averages(
        self, group: List[TorchParam], weights: List[torch.Tensor], nr_upd: int
    ) -> None:
        """thinc's parameter averages (`Ops.update_averages`: an exponential moving average from
        zero, whose decay (1 + t) / (10 + t) grows with the step t), kept under the key
        `Model.use_params` reads: (node id, name) for thinc's layers, "pytorch_{shim id}_{name}"
        for a PyTorch shim's parameters."""
        assert self.averages is not None
        for key, w, _ in group:
            if key not in self._average_tensors:
                average = torch.zeros_like(w)
                self._average_tensors[key] = average
                self._set_average(key, average)
        decay = min((1.0 + nr_upd) / (10.0 + nr_upd), 0.9999)
        averages = [self._average_tensors[key] for key, _, _ in group]
        lerp_(averages, weights, 1.0 - decay)

    def lr_scale(self, key: KeyT) -> float:
        """The factor on the schedule's learning rate for a parameter: head_lr_scale for thinc's
        layers, the layer-wise decay for the encoder's."""
        if not is_pretrained_param(key):
            return self.head_lr_scale
        return self._layer_scales.get(key, 1.0)

    def _learn_layer_scales(self, keys: Sequence[KeyT]) -> None:
        """Work out the layer-wise factors of the encoder parameters among `keys` (all of a
        model's parameters: the factor depends on how many layers its encoder has)."""
        pretrained = [key for key in keys if is_pretrained_param(key)]
        if self.layer_lr_decay == 1.0 or all(key in self._layer_scales for key in pretrained):
            return
        by_model: Dict[int, List[str]] = defaultdict(list)
        for model_id, name in pretrained:
            by_model[model_id].append(name)
        for model_id, names in by_model.items():
            for name, scale in layer_lr_scales(names, self.layer_lr_decay).items():
                self._layer_scales[(model_id, name)] = scale

    def __call__(
        self, key: KeyT, weights: FloatsXd, gradient: FloatsXd, *, lr_scale: float = 1.0
    ) -> Tuple[FloatsXd, FloatsXd]:
        if is_pretrained_param(key) and self.needs_update_all:
            # One parameter at a time, the number of the encoder's layers is unknown, and the
            # averages would land where the PyTorch shim never reads them.
            raise ValueError(
                "[bert_ner] spacy_bert_ner.Adam.v2 with layer_lr_decay below 1 or use_averages "
                "works with the transformer architecture spacy_bert_ner.TransformerModel.v1, "
                "which updates all encoder parameters at once; this transformer updates them "
                "one by one. Use that architecture, or spacy_bert_ner.Adam.v1."
            )
        return super().__call__(key, weights, gradient, lr_scale=lr_scale * self.lr_scale(key))


def layer_lr_scales(names: Sequence[str], decay: float) -> Dict[str, float]:
    """Layer-wise learning-rate decay (Howard & Ruder 2018; Sun et al. 2019): the factor of each
    parameter of one transformer, from its name. The top layer trains at the full rate, each layer
    below at `decay` times the rate of the one above, the embeddings one step below the first
    layer; parameters in no layer and not embeddings (a pooler) at the full rate."""
    layers = {name: int(m.group(1)) for name in names if (m := LAYER_INDEX.search(name))}
    if not layers:
        return {name: 1.0 for name in names}
    top = max(layers.values())
    scales = {}
    for name in names:
        if name in layers:
            scales[name] = decay ** (top - layers[name])
        elif "embed" in name:
            scales[name] = decay ** (top + 1)
        else:
            scales[name] = 1.0
    return scales


def is_pretrained_param(key: KeyT) -> bool:
    """Whether an optimizer key names a parameter of a PyTorch model (the transformer)."""
    return "." in key[1]


def average_key(key: KeyT) -> Union[KeyT, str]:
    """Where `Model.use_params` looks for a parameter's average: thinc's layers under their
    optimizer key, a PyTorch shim's parameters under "pytorch_{shim id}_{name}"
    (`PyTorchShim.use_params`; thinc's Adam stores them under (shim id, name), which it never
    reads)."""
    return f"pytorch_{key[0]}_{key[1]}" if is_pretrained_param(key) else key


@registry.optimizers("spacy_bert_ner.Adam.v1")
def make_head_scaled_adam(
    learn_rate: FloatOrSeq = 1e-4,
    *,
    head_lr_scale: float = 10.0,
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
    head_lr_scale 10, L2 0.01, no parameter averaging), not `Adam.v1`'s. With use_averages, as
    thinc's Adam, only thinc's layers are averaged (v2 averages the encoder too).
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


@registry.optimizers("spacy_bert_ner.Adam.v2")
def make_layer_decayed_adam(
    learn_rate: FloatOrSeq = 1e-4,
    *,
    head_lr_scale: float = 10.0,
    layer_lr_decay: float = 1.0,
    L2: FloatOrSeq = 0.01,
    beta1: FloatOrSeq = 0.9,
    beta2: FloatOrSeq = 0.999,
    eps: FloatOrSeq = 1e-8,
    grad_clip: FloatOrSeq = 1.0,
    L2_is_weight_decay: bool = True,
    use_averages: bool = False,
) -> Optimizer:
    """`spacy_bert_ner.Adam.v1` plus two settings, which need the transformer architecture
    `spacy_bert_ner.TransformerModel.v1` (its parameters are updated all at once):

    layer_lr_decay (float): With d < 1, the encoder's top layer trains at the schedule's rate, each
        layer below at d times the rate of the one above, and the embeddings at d ** n_layers
        (`layer_lr_scales`), so the general features of the lower layers change less than the
        task-specific ones on top. 1.0 (default): one rate for the whole encoder, as v1.
    use_averages (bool): Evaluate and save the model with thinc's moving averages of *all* its
        parameters, the encoder's included (v1, as thinc's Adam, averages thinc's layers only:
        the averages it keeps for a PyTorch model are never read by `Model.use_params`).
    """
    return HeadScaledAdam(
        learn_rate,
        head_lr_scale=head_lr_scale,
        layer_lr_decay=layer_lr_decay,
        average_encoder=True,
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
    parameter of the model: its thinc layers' and those of the PyTorch models in its shims.
    Returns False, having changed nothing, where the optimizer is not a `HeadScaledAdam` or its
    settings are not AdamW's (the caller then calls `finish_update` as usual)."""
    if not isinstance(optimizer, HeadScaledAdam) or not optimizer.can_update_all:
        return False
    params: List[TorchParam] = []
    encoder_params: List[torch.nn.Parameter] = []
    scalers = []
    for node in model.walk():
        for shim in node.shims:
            parts = torch_parts(shim)
            if parts is None:
                shim.finish_update(optimizer)
                continue
            module, scaler = parts
            scalers.append(scaler)
            # As PyTorchShim.finish_update: skip the step when mixed precision overflowed.
            for name, param in module.named_parameters():
                if param.grad is None or scaler.found_inf:
                    if param.grad is not None:
                        param.grad.zero_()
                    optimizer.average_unchanged((shim.id, name), param.data)
                else:
                    params.append(((shim.id, name), param.data, param.grad))
                    encoder_params.append(param)
    thinc_grads = []
    for node in model.walk():
        for name in node.param_names:
            if node.has_grad(name):
                weights, gradient = node.get_param(name), node.get_grad(name)
                thinc_grads.append(shared_tensor(gradient))
                params.append(((node.id, name), shared_tensor(weights), thinc_grads[-1]))
    optimizer.update_all(params)
    # Clear the gradients: thinc's are zeroed in place, as thinc's layers add to them; PyTorch's
    # are dropped, as torch's optimizers do (the next backward pass then writes a new gradient
    # instead of adding to a zeroed one).
    if thinc_grads:
        zero_(thinc_grads)
    for param in encoder_params:
        param.grad = None
    for scaler in scalers:
        scaler.update()
    return True


def torch_parts(shim: Any) -> Optional[Tuple[torch.nn.Module, Any]]:
    """The PyTorch model of a thinc `PyTorchShim` and its gradient scaler, or None for any other
    shim. thinc has no public accessor for them: they are the shim's `_model` and
    `_grad_scaler` attributes (thinc 8.0-8.3), read only where they exist; without them the shim
    updates its parameters itself, one by one with the same optimizer (`shim.finish_update`,
    thinc's public path, tested in tests/test_optimizers.py)."""
    if not isinstance(shim, PyTorchShim):
        return None
    module = getattr(shim, "_model", None)
    scaler = getattr(shim, "_grad_scaler", None)
    if not isinstance(module, torch.nn.Module) or scaler is None:
        return None
    return module, scaler
