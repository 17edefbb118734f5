"""A bert_ner listening to a transformer refuses to predict without the transformer's output."""

from pathlib import Path

import pytest
import spacy

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
