"""The batched casing features (`spacy_bert_ner.CasingFeatures.v1`) against the spaCy layers they
replace: `spacy.Tok2Vec.v2` over `spacy.MultiHashEmbed.v2` and `spacy.MaxoutWindowEncoder.v2`."""

from typing import Any, List, Tuple

import numpy
import pytest
import spacy
from spacy.ml.models.tok2vec import MaxoutWindowEncoder, MultiHashEmbed, build_Tok2Vec_model
from spacy.tokens import Doc
from spacy.util import load_config, registry
from thinc.api import Model, NumpyOps, fix_random_seed, set_dropout_rate
from util import build_nlp, train

from spacy_bert_ner import casing
from spacy_bert_ner.architectures import build_casing_features
from spacy_bert_ner.pipeline_component import DEFAULT_MODEL

SETTINGS = {
    "width": 16,
    "attrs": ["SHAPE", "PREFIX", "SUFFIX"],
    "rows": [100, 200, 200],
    "window_size": 1,
    "depth": 2,
    "maxout_pieces": 3,
}
TEXTS = [
    "John Smith visited Paris .",
    "",
    "A",
    "EU rejects German call to boycott British lamb .",
    "x Y",
    "",
]


@pytest.fixture(scope="module")
def docs() -> List[Doc]:
    nlp = spacy.blank("en")
    return [nlp(text) for text in TEXTS]


def spacy_layers() -> Model:
    embed = MultiHashEmbed(SETTINGS["width"], SETTINGS["attrs"], SETTINGS["rows"], False)
    encode = MaxoutWindowEncoder(
        SETTINGS["width"], SETTINGS["window_size"], SETTINGS["maxout_pieces"], SETTINGS["depth"]
    )
    return build_Tok2Vec_model(embed, encode)


def initialized(build: Any, docs: List[Doc]) -> Model:
    fix_random_seed(0)
    model = build()
    model.initialize(X=docs)
    return model


def params(model: Model) -> List[numpy.ndarray]:
    return [node.get_param(name) for node in model.walk() for name in node.param_names]


def train_step(model: Model, docs: List[Doc]) -> Tuple[List[numpy.ndarray], List[numpy.ndarray]]:
    """Outputs and every parameter's gradient for one step with dropout 0.1 (as spaCy sets it)."""
    set_dropout_rate(model, 0.1)
    fix_random_seed(1)
    outputs, backprop = model.begin_update(docs)
    d_outputs = [numpy.arange(Y.size, dtype="f").reshape(Y.shape) / 100 - 0.3 for Y in outputs]
    backprop(d_outputs)
    grads = [
        node.get_grad(name)
        for node in model.walk()
        for name in node.param_names
        if node.has_grad(name)
    ]
    return outputs, grads


def test_same_weights_outputs_and_gradients_as_spacy_layers(docs):
    """Same seed, same initial weights; then the same outputs (predicting and training, dropout
    masks included) and the same gradient for every weight, exactly, on a batch with empty and
    one-token docs."""
    ours = initialized(lambda: build_casing_features(**SETTINGS), docs)
    theirs = initialized(spacy_layers, docs)
    assert len(params(ours)) == len(params(theirs)) == 15
    for mine, reference in zip(params(ours), params(theirs)):
        numpy.testing.assert_array_equal(mine, reference)

    predicted = ours.predict(docs)
    assert [Y.shape for Y in predicted] == [(len(doc), SETTINGS["width"]) for doc in docs]
    for mine, reference in zip(predicted, theirs.predict(docs)):
        numpy.testing.assert_array_equal(mine, reference)

    (outputs, grads), (ref_outputs, ref_grads) = train_step(ours, docs), train_step(theirs, docs)
    assert len(grads) == len(ref_grads) == 15
    for mine, reference in zip(outputs + grads, ref_outputs + ref_grads):
        numpy.testing.assert_array_equal(mine, reference)
    assert any(grad.any() for grad in grads)


def test_a_doc_sees_its_neighbours_not_the_next_doc(docs):
    """The window reaches one token either side within a doc, and never into the next doc."""
    model = initialized(lambda: build_casing_features(**SETTINGS), docs)
    nlp = spacy.blank("en")
    alone = model.predict([nlp("x Y")])[0]
    after_another = model.predict([nlp("John Smith"), nlp("x Y")])[1]
    numpy.testing.assert_array_equal(alone, after_another)
    neighbour_changed = model.predict([nlp("x y")])[0]
    assert not numpy.allclose(alone[0], neighbour_changed[0])


def test_empty_batches(docs):
    model = initialized(lambda: build_casing_features(**SETTINGS), docs)
    nlp = spacy.blank("en")
    assert model.predict([]) == []
    outputs, backprop = model.begin_update([nlp(""), nlp("")])
    assert [Y.shape for Y in outputs] == [(0, SETTINGS["width"])] * 2
    assert backprop(outputs) == []


class CountingOps(NumpyOps):
    """NumpyOps that counts the arrays it is asked to copy in (on a GPU: host-to-device copies)."""

    copies = 0

    def asarray(self, data, *args, **kwargs):  # type: ignore[override]
        if isinstance(data, numpy.ndarray):
            CountingOps.copies += 1
        return super().asarray(data, *args, **kwargs)


def copies_per_step(model: Model, docs: List[Doc]) -> int:
    for node in model.walk():
        node.ops = CountingOps()
    CountingOps.copies = 0
    outputs, backprop = model.begin_update(docs)
    backprop(outputs)
    return CountingOps.copies


def test_host_copies_do_not_grow_with_the_batch(docs):
    """The features are copied in once per batch: spaCy's layers copy each doc's."""
    nlp = spacy.blank("en")
    few = [nlp("John Smith visited Paris .")] * 2
    many = few * 20
    ours = initialized(lambda: build_casing_features(**SETTINGS), docs)
    assert copies_per_step(ours, few) == copies_per_step(ours, many) <= 2
    theirs = initialized(spacy_layers, docs)
    assert copies_per_step(theirs, many) >= copies_per_step(theirs, few) + len(many) - len(few)


def test_registered_and_checked():
    build = registry.architectures.get("spacy_bert_ner.CasingFeatures.v1")
    assert build is build_casing_features
    with pytest.raises(ValueError, match="3 attrs but 2 rows"):
        build_casing_features(**{**SETTINGS, "rows": [100, 200]})


def test_layers_of_another_structure_are_an_error():
    """The parts of spaCy's layers are found by name: layers built otherwise fail when the
    features are built, saying which layer is missing, not at the first batch."""
    encode = MaxoutWindowEncoder(8, 1, 3, 1)
    with pytest.raises(ValueError, match="MultiHashEmbed.v2 of this spaCy version has no single"):
        casing.casing_features(Model("other", lambda model, X, is_train: (X, None)), encode)


# The default casing features as spaCy's layers, as the factory's default config had them until
# spacy_bert_ner.CasingFeatures.v1.
DEFAULT = DEFAULT_MODEL["features"]
SPACY_FEATURES = {
    "@architectures": "spacy.Tok2Vec.v2",
    "embed": {
        "@architectures": "spacy.MultiHashEmbed.v2",
        "width": DEFAULT["width"],
        "attrs": DEFAULT["attrs"],
        "rows": DEFAULT["rows"],
        "include_static_vectors": False,
    },
    "encode": {
        "@architectures": "spacy.MaxoutWindowEncoder.v2",
        "width": DEFAULT["width"],
        "depth": DEFAULT["depth"],
        "window_size": DEFAULT["window_size"],
        "maxout_pieces": DEFAULT["maxout_pieces"],
    },
}


def test_pipeline_trains_and_loads_as_with_spacy_layers(tiny_bert, tmp_path):
    """In the whole pipeline, the default features train as spaCy's layers do (the same losses
    from the same seed), and a pipeline trained with spaCy's layers loads its weights into the
    batched layer (its config's features block replaced) and predicts the same."""
    theirs = build_nlp(tiny_bert, overrides={"components.bert_ner.model.features": SPACY_FEATURES})
    ours = build_nlp(tiny_bert)
    assert ours.get_pipe("bert_ner").model.get_ref("features").name == "casing_features"
    assert train(ours, 2) == train(theirs, 2)

    theirs.to_disk(tmp_path / "pipeline")
    config = load_config(tmp_path / "pipeline" / "config.cfg")
    assert config["components"]["bert_ner"]["model"]["features"] == SPACY_FEATURES
    config["components"]["bert_ner"]["model"]["features"] = DEFAULT_MODEL["features"]
    config.to_disk(tmp_path / "pipeline" / "config.cfg")
    loaded = spacy.load(tmp_path / "pipeline")
    # (Deserializing restores the saved layer names, so the batched layer is told by its code.)
    assert loaded.get_pipe("bert_ner").model.get_ref("features")._func is casing._forward
    texts = ["John Smith visited Paris .", "paris", "", "the EU and Germany met in Berlin ."]
    for expected, doc in zip(theirs.pipe(texts), loaded.pipe(texts)):
        assert [(e.text, e.label_) for e in doc.ents] == [(e.text, e.label_) for e in expected.ents]
        scores = doc.spans["bert_ner"].attrs["scores"]
        numpy.testing.assert_array_equal(scores, expected.spans["bert_ner"].attrs["scores"])
