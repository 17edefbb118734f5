"""`spacy_bert_ner.Adam.v1`: the pretrained encoder and the layers trained from scratch at their own
learning rates."""

from typing import Dict

import numpy
import pytest
import torch
from spacy.util import load_config, registry
from synthetic import make_examples
from thinc.api import Adam, fix_random_seed
from util import CONFIG_PATH, build_nlp

from spacy_bert_ner import multi_tensor, optimizers
from spacy_bert_ner.optimizers import HeadScaledAdam, is_pretrained_param

LEARN_RATE = 1e-3


def resolve_optimizer(version: str = "v1", **settings):
    """`spacy_bert_ner.Adam.{version}` at LEARN_RATE (constant), as a config would build it."""
    config = {"@optimizers": f"spacy_bert_ner.Adam.{version}", "learn_rate": LEARN_RATE}
    return registry.resolve({"optimizer": {**config, **settings}})["optimizer"]


def make_optimizer(head_lr_scale: float):
    """Constant learning rate, no weight decay or clipping: Adam's first step on a parameter then
    moves each of its weights (with a gradient) by exactly learn_rate x scale."""
    return resolve_optimizer(head_lr_scale=head_lr_scale, L2=0.0, grad_clip=0.0)


def encoder_params(nlp) -> Dict[str, torch.nn.Parameter]:
    """The transformer's PyTorch parameters, by name."""
    return dict(nlp.get_pipe("transformer").model.transformer.named_parameters())


def snapshot(nlp) -> Dict[str, numpy.ndarray]:
    head = nlp.get_pipe("bert_ner").model.get_ref("output_layer")
    encoder = encoder_params(nlp)
    return {
        "head": numpy.array(head.get_param("W")),
        "encoder": encoder["encoder.layer.0.output.dense.weight"].detach().numpy().copy(),
    }


def max_step(nlp, head_lr_scale: float) -> Dict[str, float]:
    """The largest change of a head weight and of an encoder weight over two updates."""
    fix_random_seed(0)
    examples = make_examples(nlp, 8, 0)
    optimizer = make_optimizer(head_lr_scale)
    nlp.initialize(lambda: examples, sgd=optimizer)
    before = snapshot(nlp)
    for _ in range(2):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    after = snapshot(nlp)
    return {key: float(numpy.abs(after[key] - before[key]).max()) for key in before}


@pytest.mark.parametrize("head_lr_scale", [1.0, 10.0])
def test_head_learns_at_its_own_rate(tiny_bert, head_lr_scale):
    steps = max_step(build_nlp(tiny_bert), head_lr_scale)
    # Two Adam steps move a weight by at most 2 x its learning rate, and by about that much when
    # its gradient keeps its sign.
    assert steps["head"] == pytest.approx(2 * LEARN_RATE * head_lr_scale, rel=0.05)
    assert LEARN_RATE * 0.9 <= steps["encoder"] <= 2 * LEARN_RATE * 1.01


def test_scale_one_is_thinc_adam():
    ours, theirs = make_optimizer(1.0), Adam(LEARN_RATE, L2=0.0, grad_clip=0.0, use_averages=False)
    rng = numpy.random.default_rng(0)
    for key in [(1, "W"), (2, "encoder.layer.0.output.dense.weight")]:
        weights = rng.normal(size=(4, 3)).astype("float32")
        ours_w, theirs_w = weights.copy(), weights.copy()
        for _ in range(3):
            gradient = rng.normal(size=(4, 3)).astype("float32")
            ours_w, _ = ours(key, ours_w, gradient.copy())
            theirs_w, _ = theirs(key, theirs_w, gradient.copy())
        numpy.testing.assert_array_equal(ours_w, theirs_w)


def test_keys_tell_encoder_from_head():
    assert is_pretrained_param((3, "encoder.layer.5.attention.self.query.weight"))
    assert is_pretrained_param((3, "embeddings.word_embeddings.weight"))
    assert not is_pretrained_param((7, "W"))
    assert not is_pretrained_param((7, "E"))


def test_project_config_trains_the_head_faster():
    config = load_config(CONFIG_PATH)
    optimizer = registry.resolve({"optimizer": config["training"]["optimizer"]})["optimizer"]
    assert isinstance(optimizer, HeadScaledAdam)
    assert optimizer.head_lr_scale == 10.0


def all_weights(nlp) -> Dict[str, numpy.ndarray]:
    """Every parameter of the pipeline: the encoder's (by name) and the thinc layers' (by node)."""
    weights = {}
    for key, param in encoder_params(nlp).items():
        weights[f"transformer:{key}"] = param.detach().numpy().copy()
    for name, proc in nlp.pipeline:
        for i, node in enumerate(proc.model.walk()):
            for key in node.param_names:
                if node.has_param(key):
                    weights[f"{name}:{i}:{node.name}:{key}"] = numpy.array(node.get_param(key))
    return weights


def train_three_steps(tiny_bert, path: str, monkeypatch) -> Dict[str, numpy.ndarray]:
    """Three updates of the tiny pipeline, the optimizer step taken by `path`:
    - "fused" (the default: update_all, with torch's fused Adam kernel),
    - "unfused" (update_all where torch has no fused kernel for the tensors, or an old torch none
      on CPU: torch's per-tensor Adam),
    - "no-foreach" (update_all where torch lacks the private multi-tensor functions: the same
      arithmetic tensor by tensor),
    - "no-shim-access" (update_all where thinc's PyTorchShim does not expose its PyTorch model:
      the shim updates the encoder itself, parameter by parameter, through thinc's public
      `finish_update`),
    - "thinc" (thinc's Adam, parameter by parameter, for everything)."""
    nlp = build_nlp(tiny_bert)
    fix_random_seed(0)
    examples = make_examples(nlp, 8, 0)
    optimizer = resolve_optimizer(
        head_lr_scale=10.0,
        # Small enough that some parameters' gradients are clipped and some are not.
        grad_clip=0.05,
        # Large enough that leaving out weight decay would show.
        L2=0.1,
    )
    nlp.initialize(lambda: examples, sgd=optimizer)
    fused_calls = []
    with monkeypatch.context() as patch:
        if path == "unfused":
            patch.setattr(multi_tensor, "FUSED_DEVICES", ())
        if path == "no-foreach":
            # What `hasattr(torch, "_foreach_...")` gives on a torch without them (torch's own
            # Adam still uses them internally here).
            patch.setattr(multi_tensor, "FOREACH", False)
        if path == "no-shim-access":
            patch.setattr(optimizers, "torch_parts", lambda shim: None)
        if path == "thinc":
            patch.setattr(HeadScaledAdam, "can_update_all", property(lambda self: False))
        adam = multi_tensor.functional_adam

        def counted(*args, **kwargs):
            fused_calls.append(kwargs["fused"])
            return adam(*args, **kwargs)

        patch.setattr(multi_tensor, "functional_adam", counted)
        for _ in range(3):
            nlp.update(examples, sgd=optimizer, drop=0.0)
    # Which path ran: update_all keeps its moments as torch tensors, thinc in mom1/mom2.
    encoder_keys = [key for key in optimizer.mom1 if is_pretrained_param(key)]
    assert bool(optimizer._moments) == (path != "thinc")
    assert bool(optimizer.mom1) == (path in ("thinc", "no-shim-access"))
    assert bool(encoder_keys) == (path in ("thinc", "no-shim-access"))
    assert any(fused_calls) == (path not in ("thinc", "unfused"))
    if path == "unfused":
        assert fused_calls and not any(fused_calls)
    return all_weights(nlp)


@pytest.mark.parametrize("path", ["fused", "unfused", "no-foreach", "no-shim-access"])
def test_update_all_is_thinc_adam(tiny_bert, monkeypatch, path):
    """One step over all parameters (whichever torch and thinc functions it can use) updates
    them as thinc's Adam, called once per parameter, does: with clipping, weight decay and the
    head's own learning rate."""
    together = train_three_steps(tiny_bert, path, monkeypatch)
    one_by_one = train_three_steps(tiny_bert, "thinc", monkeypatch)
    assert together.keys() == one_by_one.keys()
    assert any("transformer:encoder." in key for key in together)
    assert any(":W" in key for key in together)
    for key, weights in one_by_one.items():
        # Within 0.1% of one step at the parameter's learning rate (rounding differs where a
        # gradient is near 0, which Adam divides by its own size).
        learn_rate = LEARN_RATE * (1.0 if ":encoder." in key or ":embeddings." in key else 10.0)
        numpy.testing.assert_allclose(
            together[key], weights, rtol=1e-5, atol=1e-3 * learn_rate, err_msg=key
        )


def test_multi_tensor_operations_equal_their_per_tensor_fallbacks(monkeypatch):
    """Each multi-tensor operation gives the same numbers with torch's private `_foreach_*`
    functions and with the public per-tensor methods used where torch lacks them."""
    rng = numpy.random.default_rng(0)

    def tensors():
        return [torch.tensor(rng.normal(size=shape).astype("float32")) for shape in [(3, 2), (5,)]]

    def run(foreach: bool, inputs):
        monkeypatch.setattr(multi_tensor, "FOREACH", foreach)
        a, b = [[t.clone() for t in ts] for ts in inputs]
        multi_tensor.clip_gradients(a, 1.5)
        multi_tensor.scale_(a, 0.9)
        multi_tensor.scale_(b, [2.0, 3.0])
        multi_tensor.scale_(b, list(torch.tensor([0.5, 0.25]).unbind(0)))
        multi_tensor.lerp_(a, b, 0.25)
        zeroed = [t.clone() for t in b]
        multi_tensor.zero_(zeroed)
        return a + b + zeroed

    inputs = [tensors(), tensors()]
    for ours, public in zip(run(True, inputs), run(False, inputs)):
        torch.testing.assert_close(ours, public, rtol=1e-6, atol=1e-7)


def test_fused_kernel_follows_the_torch_version():
    """The fused Adam kernel runs on CPU from torch 2.4 (before, on CUDA only)."""
    assert ("cpu" in multi_tensor.FUSED_DEVICES) == (multi_tensor._torch_version() >= (2, 4))
    assert "cuda" in multi_tensor.FUSED_DEVICES


def test_registered_defaults_are_the_configs():
    """The registered functions of the training config, called without a setting, use the value
    configs/bert_ner.cfg gives it (a user who builds one outside the config trains the same)."""
    import inspect

    from spacy_bert_ner.augmenters import create_context_mix
    from spacy_bert_ner.schedules import epochs_for_corpus, warmup_linear

    config = load_config(CONFIG_PATH, interpolate=False)
    training = config["training"]
    for function, section in [
        (optimizers.make_head_scaled_adam, training["optimizer"]),
        (optimizers.make_layer_decayed_adam, training["optimizer"]),
        (epochs_for_corpus, training["max_epochs"]),
        (warmup_linear, training["optimizer"]["learn_rate"]),
        (create_context_mix, config["corpora"]["train"]["augmenter"]),
    ]:
        defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(function).parameters.items()
            if parameter.default is not inspect.Parameter.empty
        }
        for name, value in section.items():
            if name in defaults and not isinstance(value, (dict, str)):
                assert defaults[name] == value, (function.__name__, name)


def test_update_all_runs_for_adamw_only(monkeypatch):
    from thinc.api import Linear

    from spacy_bert_ner.optimizers import update_all

    model = Linear(2, 2)
    model.initialize()
    model.inc_grad("W", numpy.ones((2, 2), dtype="float32"))
    before = model.get_param("W").copy()
    assert update_all(model, make_optimizer(1.0))  # on CPU too
    assert not numpy.array_equal(model.get_param("W"), before)
    assert not model.get_grad("W").any()
    assert not update_all(Linear(2, 2), Adam(1e-3))
    averaged = make_optimizer(1.0)
    assert averaged.can_update_all
    averaged.averages = {}
    assert not averaged.can_update_all


def test_layer_lr_scales_decay_from_the_top_layer():
    names = [
        "embeddings.word_embeddings.weight",
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.1.output.dense.bias",
        "encoder.layer.2.output.LayerNorm.weight",
        "pooler.dense.weight",
    ]
    assert optimizers.layer_lr_scales(names, 0.5) == {
        "embeddings.word_embeddings.weight": 0.125,
        "encoder.layer.0.attention.self.query.weight": 0.25,
        "encoder.layer.1.output.dense.bias": 0.5,
        "encoder.layer.2.output.LayerNorm.weight": 1.0,
        "pooler.dense.weight": 1.0,
    }
    # DistilBERT names its layers "transformer.layer.N".
    distil = optimizers.layer_lr_scales(
        ["transformer.layer.0.ffn.lin1.weight", "transformer.layer.1.ffn.lin1.weight"], 0.8
    )
    assert distil == {
        "transformer.layer.0.ffn.lin1.weight": 0.8,
        "transformer.layer.1.ffn.lin1.weight": 1.0,
    }


def encoder_steps(tiny_bert, layer_lr_decay: float) -> Dict[str, float]:
    """The largest change of each encoder parameter in its first Adam step, which moves a weight by
    its learning rate x its factor when its gradient is not tiny. (spaCy's `nlp.update` steps the
    transformer before the components listening to it backpropagate, so the encoder's first step,
    with the first batch's gradients, comes in the second update.)"""
    nlp = build_nlp(tiny_bert)
    fix_random_seed(0)
    examples = make_examples(nlp, 8, 0)
    optimizer = resolve_optimizer("v2", layer_lr_decay=layer_lr_decay, L2=0.0, grad_clip=0.0)
    nlp.initialize(lambda: examples, sgd=optimizer)
    nlp.update(examples, sgd=optimizer, drop=0.0)
    before = {k: p.detach().numpy().copy() for k, p in encoder_params(nlp).items()}
    nlp.update(examples, sgd=optimizer, drop=0.0)
    after = encoder_params(nlp)
    return {k: float(numpy.abs(after[k].detach().numpy() - v).max()) for k, v in before.items()}


def test_layer_lr_decay_slows_the_lower_layers(tiny_bert):
    """On CPU too (thinc's Adam cannot see the whole encoder, so update_all runs there)."""
    full = encoder_steps(tiny_bert, 1.0)
    decayed = encoder_steps(tiny_bert, 0.5)
    n_layers = 1 + max(int(k.split(".")[2]) for k in full if k.startswith("encoder.layer."))
    checked = 0
    for key, step in full.items():
        if step < 0.5 * LEARN_RATE:  # no gradient to speak of (e.g. unused embedding rows)
            continue
        if key.startswith("encoder.layer."):
            expected = 0.5 ** (n_layers - 1 - int(key.split(".")[2]))
        elif key.startswith("embeddings."):
            expected = 0.5**n_layers
        else:
            expected = 1.0
        assert decayed[key] == pytest.approx(expected * step, rel=0.02), key
        checked += 1
    assert checked > 10


def test_layer_lr_decay_settings_are_checked():
    with pytest.raises(ValueError, match="layer_lr_decay must be in"):
        optimizers.make_layer_decayed_adam(1e-4, layer_lr_decay=0.0)
    with pytest.raises(ValueError, match="L2_is_weight_decay = true"):
        optimizers.make_layer_decayed_adam(1e-4, layer_lr_decay=0.8, L2_is_weight_decay=False)
    # One parameter at a time (another transformer architecture), the decay cannot apply.
    optimizer = optimizers.make_layer_decayed_adam(1e-4, layer_lr_decay=0.8)
    weights = numpy.zeros((2, 2), dtype="float32")
    with pytest.raises(ValueError, match="spacy_bert_ner.TransformerModel.v1"):
        optimizer((1, "encoder.layer.0.output.dense.weight"), weights, weights.copy())
    optimizer((2, "W"), weights, weights.copy())  # thinc's layers are fine


def averaged_training(tiny_bert, version: str):
    """Four updates with parameter averages; the weights of one encoder parameter and of the
    output layer after each."""
    nlp = build_nlp(tiny_bert)
    fix_random_seed(0)
    examples = make_examples(nlp, 8, 0)
    optimizer = resolve_optimizer(version, head_lr_scale=10.0, use_averages=True)
    nlp.initialize(lambda: examples, sgd=optimizer)
    history = []
    for _ in range(4):
        nlp.update(examples, sgd=optimizer, drop=0.0)
        history.append(snapshot(nlp))
    return nlp, optimizer, history


def thinc_average(steps):
    """thinc's `Ops.update_averages` over a parameter's values after each of its updates."""
    average = numpy.zeros_like(steps[0])
    for t, weights in enumerate(steps, 1):
        decay = min((1.0 + t) / (10.0 + t), 0.9999)
        average += (1.0 - decay) * (weights - average)
    return average


@pytest.mark.parametrize("foreach", [True, False])
def test_v2_evaluates_with_the_averages_of_the_encoder_too(tiny_bert, monkeypatch, foreach):
    monkeypatch.setattr(multi_tensor, "FOREACH", foreach)
    nlp, optimizer, history = averaged_training(tiny_bert, "v2")
    # The encoder's first step comes in the second update (see encoder_steps).
    expected = {
        "encoder": thinc_average([h["encoder"] for h in history[1:]]),
        "head": thinc_average([h["head"] for h in history]),
    }
    with nlp.use_params(optimizer.averages):
        averaged = snapshot(nlp)
    for key in ("encoder", "head"):
        numpy.testing.assert_allclose(averaged[key], expected[key], rtol=1e-5, atol=1e-7)
        assert not numpy.allclose(averaged[key], history[-1][key])
    # Back to the trained weights after the block.
    for key, weights in snapshot(nlp).items():
        numpy.testing.assert_array_equal(weights, history[-1][key])


def test_v1_like_thinc_adam_averages_only_thincs_layers(tiny_bert):
    """Why v2 keeps the averages itself: thinc's Adam keeps the encoder's under keys that
    `PyTorchShim.use_params` does not read, so inside use_params the encoder is unchanged."""
    nlp, optimizer, history = averaged_training(tiny_bert, "v1")
    with nlp.use_params(optimizer.averages):
        averaged = snapshot(nlp)
    numpy.testing.assert_array_equal(averaged["encoder"], history[-1]["encoder"])
    assert not numpy.allclose(averaged["head"], history[-1]["head"])
