"""The token classifier's prediction pass: the probabilities of thinc's layers, computed a chunk
of token rows at a time (architectures.PREDICT_ROWS)."""

import numpy
import pytest
import spacy
from spacy.util import registry
from thinc.api import fix_random_seed
from util import small_tok2vec, traced_peak

from spacy_bert_ner import architectures
from spacy_bert_ner.pipeline_component import DEFAULT_MODEL

TEXTS = ["", "anna lives in paris", "x", " ".join(["john smith works at acme corp ."] * 9), "the"]


@pytest.mark.parametrize(
    "features,hidden_width,crf", [(True, 0, False), (False, 0, False), (True, 8, True)]
)
def test_prediction_in_chunks_equals_thincs_layers(
    features: bool, hidden_width: int, crf: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With or without features, a hidden layer or a CRF: a batch predicted in chunks of 7 token
    rows (a doc split over chunks, docs grouped, an empty doc) gets the probabilities of the
    model's thinc layers run on the whole batch joined."""
    fix_random_seed(0)
    config = {
        "@architectures": "spacy_bert_ner.TokenClassifier.v3",
        "tok2vec": small_tok2vec(8),
        "features": dict(DEFAULT_MODEL["features"]) if features else None,
        "hidden_width": hidden_width,
        "crf": crf,
        "nO": 5,
    }
    model = registry.resolve({"model": config})["model"]
    nlp = spacy.blank("en")
    docs = [nlp.make_doc(text) for text in TEXTS]
    model.initialize(X=docs)
    classifier = model.layers[0] if crf else model
    inputs, head = classifier.layers
    expected = head.predict(inputs.predict(docs))
    assert len(docs[3]) > 2 * 7
    for rows in (architectures.PREDICT_ROWS, 7):
        monkeypatch.setattr(architectures, "PREDICT_ROWS", rows)
        predicted = model.predict(docs)
        assert [Y.shape for Y in predicted] == [Y.shape for Y in expected]
        assert predicted[0].shape == (0, 5)
        for Y, E in zip(predicted, expected):
            numpy.testing.assert_allclose(Y, E, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="no backward pass"):
        classifier(docs, is_train=False)[1](predicted)


def test_long_document_classified_without_joining_its_inputs() -> None:
    """The classifier of a long doc puts a chunk of its inputs side by side at a time: its peak
    allocation stays far below the size of the inputs, which thinc's layers copied three times
    (joined per source, side by side, then flattened)."""
    from thinc.api import Model

    def given(array: numpy.ndarray) -> Model:  # a tok2vec that returns arrays made before
        return Model("given", lambda model, docs, is_train: ([array], lambda dYs: []))

    doc = spacy.blank("en").make_doc(" ".join(["john smith works at acme corp ."] * 3000))
    vectors = numpy.random.default_rng(0).random((len(doc), 96), dtype="float32")
    features = numpy.random.default_rng(1).random((len(doc), 32), dtype="float32")
    model = architectures.build_token_classifier_v3(given(vectors), given(features), nO=5)
    model.initialize(X=[doc])
    (scores,), peak = traced_peak(lambda: model.predict([doc]))
    assert scores.shape == (21_000, 5)
    assert peak < (vectors.nbytes + features.nbytes) / 2, (peak, vectors.nbytes + features.nbytes)
