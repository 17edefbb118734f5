"""`spacy_bert_ner.Adam.v1`: the pretrained encoder and the layers trained from scratch at their own
learning rates."""

from typing import Dict

import numpy
import pytest
from spacy.util import load_config, registry
from synthetic import make_examples
from thinc.api import Adam, fix_random_seed
from util import CONFIG_PATH, build_nlp

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
