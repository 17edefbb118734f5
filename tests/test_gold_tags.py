"""The gold tags the component trains on equal spaCy's alignment
(`Example.get_aligned_ents_and_ner`) as tag ids, for the data's own tokens and a tokenizer's."""

from collections import Counter
from typing import List, Optional, Tuple

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc
from spacy.training import Example

from spacy_bert_ner.decoding import biluo_to_scheme, make_tags
from spacy_bert_ner.gold import _align_by_characters, gold_tag_ids

NLP = spacy.blank("en")
LABELS = ("LOC", "PER")
# Words a tokenizer splits ('EU-wide', 'U.S.-based', '1996-08-22') or merges ('New York's'
WORDS = (
    *("Paris", "is", " ", "\n", "EU-wide", "U.S.-based", "1996-08-22", "York's", "'s", "."),
    *("(EU)", "don't", "Mr.", "U.K.'s", "e-mail:", "x"),
)
# (kind, length): an entity of a label, outside, or missing annotation.
SEGMENT = st.tuples(st.sampled_from(["LOC", "PER", "NEW", "O", "missing"]), st.integers(1, 3))


def make_doc(segments: List[Tuple[str, int]], words: List[str], spaces: List[bool]) -> Doc:
    iob: List[Optional[str]] = []
    for kind, length in segments:
        if kind == "O":
            iob += ["O"] * length
        elif kind == "missing":
            iob += [""] * length
        else:
            iob += [f"B-{kind}"] + [f"I-{kind}"] * (length - 1)
    words = (words * len(iob))[: len(iob)]
    spaces = (spaces * len(iob))[: len(iob)]
    return Doc(NLP.vocab, words=words, spaces=spaces, ents=iob)


def spacy_ids(eg: Example, tags: List[str], scheme: str) -> Tuple[List[int], Counter]:
    """The ids from spaCy's alignment, mapped as the component maps them."""
    tag_ids = {tag: i for i, tag in enumerate(tags)}
    ids, unknown = [], Counter()
    for tag in eg.get_aligned_ents_and_ner()[1]:
        if tag is None or tag == "-":
            ids.append(-1)
        elif biluo_to_scheme(tag, scheme) in tag_ids:
            ids.append(tag_ids[biluo_to_scheme(tag, scheme)])
        else:
            unknown[tag[2:]] += tag[0] in "BU"
            ids.append(tag_ids["O"])
    return ids, +unknown


def ids_of(eg: Example, tags: List[str], scheme: str) -> Tuple[List[int], Counter, bool]:
    unknown: Counter = Counter()
    ids, misaligned = gold_tag_ids(eg, {t: i for i, t in enumerate(tags)}, scheme, unknown)
    return ids.tolist(), unknown, misaligned


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
# The data's own tokens; a tokenizer's, on the same text (aligned by characters); a tokenizer's on
# the text upper-cased (aligned by spaCy's alignment, which ignores case).
@pytest.mark.parametrize("tokenizer", ["none", "same_text", "upper_case"])
@settings(max_examples=80, deadline=None)
@given(
    segments=st.lists(SEGMENT, min_size=1, max_size=8),
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=5),
    spaces=st.lists(st.booleans(), min_size=1, max_size=3),
)
def test_gold_ids_equal_spacys_alignment(
    scheme: str,
    tokenizer: str,
    segments: List[Tuple[str, int]],
    words: List[str],
    spaces: List[bool],
) -> None:
    reference = make_doc(segments, words, spaces)
    if tokenizer == "same_text":  # as spacy.Corpus makes examples (gold_preproc = false)
        predicted = NLP.make_doc(reference.text)
    elif tokenizer == "upper_case":
        predicted = NLP.make_doc(reference.text.upper())
    else:
        predicted = Doc(NLP.vocab, words=[t.text for t in reference])
    eg = Example(predicted, reference)
    tags = make_tags(LABELS, scheme)
    ids, unknown, misaligned = ids_of(eg, tags, scheme)
    expected, expected_unknown = spacy_ids(eg, tags, scheme)
    assert ids == expected
    assert unknown == expected_unknown
    assert misaligned == (len(eg.get_aligned_spans_y2x(reference.ents)) < len(reference.ents))


@pytest.mark.parametrize("align", ["characters", "spacy"])
def test_tokenizer_splits_and_merges_are_aligned(align: str) -> None:
    reference = Doc(
        NLP.vocab,
        words=["EU-wide", "ban", "in", "Paris", "ian", "port", "(EU)", "."],
        spaces=[True, True, True, False, True, True, False, False],
        ents=["B-LOC", "O", "O", "B-LOC", "O", "", "B-LOC", "O"],
    )
    # The same text (aligned by characters), or upper-cased (spaCy's alignment ignores case).
    text = reference.text if align == "characters" else reference.text.upper()
    eg = Example(NLP.make_doc(text), reference)
    words = ["EU", "-", "wide", "ban", "in", "Parisian", "port", "(", "EU", ")", "."]
    assert [t.text.lower() for t in eg.predicted] == [w.lower() for w in words]
    outside = reference.to_array("ENT_IOB") == 2
    by_characters = _align_by_characters(eg.predicted, reference, outside)
    assert (by_characters is not None) == (align == "characters")
    tags = make_tags(LABELS, "BILUO")
    ids, _, misaligned = ids_of(eg, tags, "BILUO")
    # 'EU-wide' is split into a three-token LOC; 'Parisian' covers the LOC 'Paris' and more, so it
    # is missing (neither the entity nor outside); 'port' is missing in the data; the '.' right
    # after '(EU)' is outside, like the reference token it overlaps, and only that one.
    assert [tags[i] if i >= 0 else None for i in ids] == [
        *("B-LOC", "I-LOC", "L-LOC", "O", "O", None, None, "B-LOC", "I-LOC", "L-LOC", "O")
    ]
    assert misaligned


def test_no_entity_annotation_is_all_missing() -> None:
    doc = Doc(NLP.vocab, words=["Paris", " ", "is"])
    tags = make_tags(LABELS, "BILUO")
    assert ids_of(Example(doc, doc), tags, "BILUO") == ([-1, -1, -1], Counter(), False)
