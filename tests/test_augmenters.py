"""context_mix.v1: training documents cut into pieces of 1..max_sents sentences, nothing lost."""

import random
from collections import Counter
from typing import List

import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Corpus, Example
from spacy.util import registry
from synthetic import make_doc

from spacy_bert_ner.augmenters import create_context_mix

NLP = spacy.blank("en")


def pieces(doc: Doc, **settings) -> List[Example]:
    augment = create_context_mix(**settings)
    return list(augment(NLP, Example(NLP.make_doc(doc.text), doc)))


@pytest.mark.parametrize("seed", range(5))
def test_pieces_cover_the_document_in_order_with_its_entities(seed: int) -> None:
    random.seed(seed)
    doc = make_doc(23)
    egs = pieces(doc, whole_fraction=0.0, max_sents=5)
    assert len(egs) > 1
    assert [t.text for eg in egs for t in eg.reference] == [t.text for t in doc]
    assert [e.text for eg in egs for e in eg.reference.ents] == [e.text for e in doc.ents]
    for eg in egs:
        assert 1 <= len(list(eg.reference.sents)) <= 5
        # The predicted side is the piece's text, tokenized, as spacy.Corpus makes examples.
        assert eg.predicted.text == eg.reference.text
        assert not eg.predicted.has_annotation("ENT_IOB")


def test_whole_documents_and_documents_without_sentences_pass_through() -> None:
    doc = make_doc(6)
    example = Example(NLP.make_doc(doc.text), doc)
    assert list(create_context_mix(whole_fraction=1.0)(NLP, example)) == [example]
    tweet = Doc(NLP.vocab, words=["@peter", "in", "Paris"], ents=["O", "O", "B-LOC"])
    assert not tweet.has_annotation("SENT_START")
    example = Example(NLP.make_doc(tweet.text), tweet)
    assert list(create_context_mix(whole_fraction=0.0)(NLP, example)) == [example]
    one = make_doc(1)
    example = Example(NLP.make_doc(one.text), one)
    assert list(create_context_mix(whole_fraction=0.0)(NLP, example)) == [example]


def test_each_context_length_gets_about_the_same_share_of_tokens() -> None:
    random.seed(0)
    tokens: Counter = Counter()
    for _ in range(300):
        for eg in pieces(make_doc(40), whole_fraction=0.0, max_sents=10):
            tokens[len(list(eg.reference.sents))] += len(eg.reference)
    shares = [tokens[n] / sum(tokens.values()) for n in range(1, 11)]
    # 1/n draws: each length about 10% of the tokens (a uniform draw gives 1 sentence 1.8%).
    assert min(shares) > 0.07 and max(shares) < 0.13, shares


@pytest.mark.parametrize("settings", [{"whole_fraction": 1.5}, {"max_sents": 0}])
def test_bad_settings_are_refused(settings) -> None:
    with pytest.raises(ValueError, match="context_mix"):
        create_context_mix(**settings)


def test_the_corpus_reader_applies_it_from_the_config(tmp_path) -> None:
    path = tmp_path / "train.spacy"
    DocBin(docs=[make_doc(10) for _ in range(20)]).to_disk(path)
    augmenter = registry.resolve(
        {"a": {"@augmenters": "spacy_bert_ner.context_mix.v1", "whole_fraction": 0.0}}
    )["a"]
    random.seed(0)
    examples = list(Corpus(path, augmenter=augmenter)(NLP))
    assert len(examples) > 20
    assert sum(len(eg.reference) for eg in examples) == 20 * 40
