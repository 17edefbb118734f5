"""The listener: bert_ner refuses to predict without the transformer's output, and its batch id."""

from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc
from spacy_transformers.layers import TransformerListener
from util import traced_peak

from spacy_bert_ner.listener import FastTransformerListener

TEXT = "john smith works for acme corp in paris ."


def test_disabled_transformer_is_an_error(pipeline_path: Path) -> None:
    nlp = spacy.load(pipeline_path)
    with (
        nlp.select_pipes(enable=["bert_ner"]),
        pytest.raises(ValueError, match="replace_listeners"),
    ):
        nlp(TEXT)
    assert nlp(TEXT).ents  # with the transformer it predicts


def test_sourced_listener_needs_replace_listeners(pipeline_path: Path) -> None:
    trained = spacy.load(pipeline_path)
    expected = [(e.text, e.label_) for e in trained(TEXT).ents]
    nlp = spacy.blank("en")
    nlp.add_pipe("bert_ner", source=trained)
    with pytest.raises(ValueError, match=r"\[bert_ner\] 'bert_ner' listens to a transformer"):
        nlp(TEXT)
    trained.replace_listeners("transformer", "bert_ner", ["model.tok2vec"])
    nlp = spacy.blank("en")
    nlp.add_pipe("bert_ner", source=trained)
    assert [(e.text, e.label_) for e in nlp(TEXT).ents] == expected


def test_fast_listener_batch_id_equals_spacy_transformers():
    """The vectorized batch id is the base class's exact sum of 64-bit ORTH hashes (which
    overflows a uint64), so the check against the transformer's id keeps working."""
    nlp = spacy.blank("en")
    docs = [nlp("Peter Blackburn went to BRUSSELS on Tuesday ."), nlp(""), nlp("EU-wide ban")]
    docs += [Doc(nlp.vocab, words=[f"w{i}" for i in range(300)])]
    assert sum(t.orth for d in docs for t in d) > 2**64  # the overflow case is exercised
    for batch in (docs, docs[:1], docs[1:2], []):
        assert FastTransformerListener.get_batch_id(batch) == TransformerListener.get_batch_id(
            batch
        )
    assert FastTransformerListener.get_batch_id(docs[:1]) != FastTransformerListener.get_batch_id(
        docs[2:3]
    )


@pytest.mark.parametrize("pooling", ["reduce_mean.v1", "reduce_first.v1"])
def test_batched_pooling_equals_spacy_transformers(pipeline_path: Path, pooling: str) -> None:
    """listener.trfs2arrays pools the whole batch at once: the same token vectors, and the same
    gradient for each doc's word pieces, as spacy-transformers' doc-by-doc layer; an empty doc,
    whitespace and control-character tokens (no word piece) and a long doc (several windows)
    included, and a doc without any word piece (reduce_first needs a word piece in every token,
    here as upstream)."""
    import numpy
    from spacy.util import registry
    from spacy_transformers.layers import trfs2arrays as upstream

    from spacy_bert_ner.listener import trfs2arrays

    nlp = spacy.load(pipeline_path)
    texts = [
        TEXT,
        "",
        "acme  corp \n paris",
        "john \x07 smith",
        " ".join([TEXT] * 40),
        "\x00\x07\t",
    ]
    if pooling == "reduce_first.v1":
        texts[2:4] = ["acme corp paris", "john smith"]
    docs = list(nlp.pipe(texts))
    trf_datas = [doc._.trf_data for doc in docs]
    layer = registry.get("layers", pooling)()
    ours, theirs = trfs2arrays(layer, 0.5), upstream(layer, 0.5)
    (Y_ours, back_ours), (Y_theirs, back_theirs) = (
        model.begin_update(trf_datas) for model in (ours, theirs)
    )
    assert [Y.shape for Y in Y_ours] == [Y.shape for Y in Y_theirs]
    assert Y_ours[1].shape == (0, 0) and len(Y_ours[4]) > 128  # the empty doc; several windows
    for a, b in zip(Y_ours, Y_theirs):
        numpy.testing.assert_allclose(a, b, rtol=1e-6)
    rng = numpy.random.default_rng(0)
    d_Y = [rng.normal(size=Y.shape).astype("float32") for Y in Y_theirs]
    d_ours, d_theirs = back_ours([d.copy() for d in d_Y]), back_theirs([d.copy() for d in d_Y])
    assert len(d_ours) == len(d_theirs) == len(texts) - 1
    for a, b in zip(d_ours, d_theirs):
        assert a.align is b.align and a.wordpieces is b.wordpieces
        numpy.testing.assert_allclose(
            a.model_output.last_hidden_state, b.model_output.last_hidden_state, rtol=1e-6
        )


@pytest.mark.parametrize("pooling", ["reduce_mean.v1", "reduce_first.v1", "reduce_max.v1"])
def test_prediction_in_groups_and_chunks_equals_one_gather(
    pipeline_path: Path, pooling: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prediction pools groups of docs, and a long doc a chunk of tokens at a time: the vectors of
    one gather over the whole batch (the training pass), with small groups and chunks (a doc
    split over several chunks, docs grouped and alone, an empty doc, a doc without word pieces,
    whitespace and control-character tokens)."""
    import numpy
    from spacy.util import registry

    from spacy_bert_ner import listener

    nlp = spacy.load(pipeline_path)
    texts = ["", TEXT, "acme  corp \n paris", " ".join([TEXT] * 40), "john \x07 smith", "\x00"]
    if pooling != "reduce_mean.v1":  # as upstream, these need a word piece in every token
        texts[2], texts[4] = "acme corp paris", "john smith"
    trf_datas = [doc._.trf_data for doc in nlp.pipe(texts)]
    layer = listener.trfs2arrays(registry.get("layers", pooling)(), 1.0)
    expected, _ = layer.begin_update(trf_datas)
    monkeypatch.setattr(listener, "POOL_ROWS", 200)
    monkeypatch.setattr(listener, "POOL_TOKENS", 7)
    predicted = layer.predict(trf_datas)
    assert [Y.shape for Y in predicted] == [Y.shape for Y in expected]
    for a, b in zip(predicted, expected):
        numpy.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="no backward pass"):
        layer(trf_datas, is_train=False)[1](predicted)


def test_long_document_prediction_memory_is_bounded(
    pipeline_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long doc's prediction through the listener copies a chunk of its word pieces at a time,
    not all of them (a 1M-character doc's are 0.9 GB with MiniLM): the listener's peak
    allocation stays near its output, well below the size of the doc's word-piece vectors
    (chunks of 1,024 tokens here, as the tiny BERT's vectors are small)."""
    from spacy.util import registry

    from spacy_bert_ner import listener
    from spacy_bert_ner.listener import trfs2arrays

    monkeypatch.setattr(listener, "POOL_TOKENS", 1024)
    nlp = spacy.load(pipeline_path)
    trf_data = nlp(" ".join([TEXT] * 2000))._.trf_data  # 18,000 tokens, 188 windows
    hidden = trf_data.model_output["last_hidden_state"]
    layer = trfs2arrays(registry.get("layers", "reduce_mean.v1")(), 1.0)
    (pooled,), peak = traced_peak(lambda: layer.predict([trf_data]))
    assert len(pooled) == 18_000 and hidden.shape[0] > 150
    # One gather over a copy of all word pieces peaks above hidden.nbytes + pooled.nbytes.
    assert peak < pooled.nbytes + hidden.nbytes / 2, (peak, pooled.nbytes, hidden.nbytes)


def test_long_document_predicted_in_chunks_as_in_one_pass(
    pipeline_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bert_ner's prediction pools the listener's tokens, runs the casing features' window
    encoder and the classifier a chunk at a time (listener.POOL_TOKENS, casing.PREDICT_ROWS,
    architectures.PREDICT_ROWS): with small chunks, a long doc gets the casing features, scores
    and entities of one chunk."""
    import numpy

    from spacy_bert_ner import architectures, casing, listener

    nlp = spacy.load(pipeline_path)
    text = " ".join([TEXT, "John Smith  and\n\nParis ."] * 30)
    monkeypatch.setattr(listener, "POOL_TOKENS", 10**9)
    monkeypatch.setattr(casing, "PREDICT_ROWS", 10**9)
    monkeypatch.setattr(architectures, "PREDICT_ROWS", 10**9)
    one_pass = nlp(text)
    features = nlp.get_pipe("bert_ner").model.get_ref("features")
    expected = features.predict([one_pass])
    scores = nlp.get_pipe("bert_ner").predict([one_pass])
    monkeypatch.setattr(listener, "POOL_TOKENS", 5)
    monkeypatch.setattr(casing, "PREDICT_ROWS", 7)
    monkeypatch.setattr(architectures, "PREDICT_ROWS", 11)
    chunked = nlp(text)
    assert len(chunked) > 7 * 30
    numpy.testing.assert_allclose(features.predict([chunked])[0], expected[0], rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(
        nlp.get_pipe("bert_ner").predict([chunked])[0], scores[0], rtol=1e-5, atol=1e-6
    )
    assert [(e.start, e.end, e.label_) for e in chunked.ents] == [
        (e.start, e.end, e.label_) for e in one_pass.ents
    ]
    assert one_pass.ents
