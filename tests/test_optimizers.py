"""`spacy_bert_ner.Adam.v1`: the pretrained encoder and the layers trained from scratch at their own
learning rates."""

from typing import Dict

import numpy
import pytest
from spacy.util import load_config, registry
from synthetic import make_examples
from thinc.api import Adam, fix_random_seed
from util import CONFIG_PATH, build_nlp

from spacy_bert_ner import optimizers
from spacy_bert_ner.optimizers import HeadScaledAdam, is_pretrained_param

LEARN_RATE = 1e-3


def make_optimizer(head_lr_scale: float):
    """Constant learning rate, no weight decay or clipping: Adam's first step on a parameter then
    moves each of its weights (with a gradient) by exactly learn_rate x scale."""
    config = {
        "@optimizers": "spacy_bert_ner.Adam.v1",
        "learn_rate": LEARN_RATE,
        "head_lr_scale": head_lr_scale,
        "L2": 0.0,
        "grad_clip": 0.0,
    }
    return registry.resolve({"optimizer": config})["optimizer"]


def snapshot(nlp) -> Dict[str, numpy.ndarray]:
    head = nlp.get_pipe("bert_ner").model.get_ref("output_layer")
    shim = next(shim for node in nlp.get_pipe("transformer").model.walk() for shim in node.shims)
    encoder = dict(shim._model.named_parameters())
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
    for name, proc in nlp.pipeline:
        for i, node in enumerate(proc.model.walk()):
            for shim in node.shims:
                for key, param in shim._model.named_parameters():
                    weights[f"{name}:{key}"] = param.detach().numpy().copy()
            for key in node.param_names:
                if node.has_param(key):
                    weights[f"{name}:{i}:{node.name}:{key}"] = numpy.array(node.get_param(key))
    return weights


def train_three_steps(tiny_bert, update_all: bool, monkeypatch) -> Dict[str, numpy.ndarray]:
    nlp = build_nlp(tiny_bert)
    fix_random_seed(0)
    examples = make_examples(nlp, 8, 0)
    optimizer = registry.resolve(
        {
            "optimizer": {
                "@optimizers": "spacy_bert_ner.Adam.v1",
                "learn_rate": LEARN_RATE,
                "head_lr_scale": 10.0,
                # Small enough that some parameters' gradients are clipped and some are not.
                "grad_clip": 0.05,
                # Large enough that leaving out weight decay would show.
                "L2": 0.1,
            }
        }
    )["optimizer"]
    nlp.initialize(lambda: examples, sgd=optimizer)
    with monkeypatch.context() as patch:
        # (On a GPU it runs by default; on CPU, thinc's Adam is as fast.)
        patch.setattr(optimizers, "UPDATE_ALL_ON_CPU", True)
        if not update_all:
            patch.setattr(HeadScaledAdam, "can_update_all", property(lambda self: False))
        for _ in range(3):
            nlp.update(examples, sgd=optimizer, drop=0.0)
    # Which path ran: update_all keeps its moments as torch tensors, thinc in mom1/mom2.
    assert bool(optimizer._moments) == update_all
    assert bool(optimizer.mom1) != update_all
    return all_weights(nlp)


def test_update_all_is_thinc_adam(tiny_bert, monkeypatch):
    """One multi-tensor step over all parameters updates them as thinc's Adam, called once per
    parameter, does: with clipping, weight decay and the head's own learning rate."""
    together = train_three_steps(tiny_bert, True, monkeypatch)
    one_by_one = train_three_steps(tiny_bert, False, monkeypatch)
    assert together.keys() == one_by_one.keys()
    assert any(":encoder." in key for key in together) and any(":W" in key for key in together)
    for key, weights in one_by_one.items():
        # Within 0.1% of one step at the parameter's learning rate (rounding differs where a
        # gradient is near 0, which Adam divides by its own size).
        learn_rate = LEARN_RATE * (1.0 if ":encoder." in key or ":embeddings." in key else 10.0)
        numpy.testing.assert_allclose(
            together[key], weights, rtol=1e-5, atol=1e-3 * learn_rate, err_msg=key
        )


def test_update_all_leaves_other_optimizers_and_cpu_alone(monkeypatch):
    from thinc.api import Linear

    from spacy_bert_ner.optimizers import update_all

    assert not update_all(Linear(2, 2), make_optimizer(1.0))  # CPU: thinc's Adam
    monkeypatch.setattr(optimizers, "UPDATE_ALL_ON_CPU", True)
    assert not update_all(Linear(2, 2), Adam(1e-3))
    averaged = make_optimizer(1.0)
    assert averaged.can_update_all
    averaged.averages = {}
    assert not averaged.can_update_all
