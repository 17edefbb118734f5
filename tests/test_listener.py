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
