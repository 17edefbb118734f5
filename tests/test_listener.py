"""The listener: bert_ner refuses to predict without the transformer's output, and its batch id."""

from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc
from spacy_transformers.layers import TransformerListener

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
