"""Gold tags: each predicted token's gold tag id, from the reference doc's entities.

The training docs' tokens (`Example.predicted`) need not be the reference's (`Example.reference`):
gold entities are aligned to the predicted tokens along one of three paths, the cheapest that
applies: the same tokens (converted data), character offsets (the same text, tokenized again, as
`spacy.Corpus` makes examples), or spaCy's own alignment (anything else). All three give the tags
of spaCy's `Example.get_aligned_ents_and_ner` (tests/test_gold_tags.py checks it).
"""

from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy
from spacy.attrs import ENT_IOB, IDX, IS_SPACE, LENGTH, ORTH
from spacy.tokens import Doc
from spacy.training import Example

from .decoding import biluo_to_scheme

# The gold tag id of a token with missing annotation: it carries no loss.
MISSING = -1

# The value of Token.ent_iob for a token annotated as outside any entity (0 is missing, 1 I, 3 B).
IOB_OUTSIDE = 2

# Logged once per process: misaligned gold spans are ignored in the loss, never silently.
MISALIGNED_WARNING = (
    "[bert_ner] Some gold entities do not align to the predicted tokenization; their tokens are "
    "treated as missing annotation and ignored in the loss. Check the training data with "
    "`python -m spacy debug data`, or retokenize it so every entity starts and ends on a token "
    "boundary."
)


def unknown_labels_warning(
    name: str, labels: Sequence[str], counts: Dict[str, int], where: str
) -> str:
    """The warning about gold entities with labels the component `name` does not predict."""
    listed = ", ".join(f"{label} ({n})" for label, n in sorted(counts.items()))
    return (
        f"[bert_ner] '{name}' predicts the labels {list(labels)}, but gold entities {where} "
        f"have other labels: {listed}. They are trained as outside ('O'). To learn them, add "
        "them to [initialize.components.bert_ner.labels] (or leave that unset to take every "
        "label from the training data); to silence this, remove or relabel those entities in "
        "the data."
    )


def batch_gold_tag_ids(
    examples: Iterable[Example], tags: Sequence[str], scheme: str
) -> Tuple[numpy.ndarray, bool, Counter]:
    """`gold_tag_ids` for a batch: the gold tag id of every predicted token, the docs one after
    another (MISSING where unannotated), whether some gold entity did not align, and the number
    of gold entities per label outside `tags` (trained as 'O')."""
    tag_ids = {tag: i for i, tag in enumerate(tags)}
    ids: List[numpy.ndarray] = []
    misaligned = False
    unknown: Counter = Counter()
    for eg in examples:
        eg_ids, eg_misaligned = gold_tag_ids(eg, tag_ids, scheme, unknown)
        ids.append(eg_ids)
        misaligned = misaligned or eg_misaligned
    flat = numpy.concatenate(ids) if ids else numpy.zeros(0, dtype="int32")
    return flat, misaligned, unknown


def gold_tag_ids(
    eg: Example, tag_ids: Dict[str, int], scheme: str, unknown: Counter
) -> Tuple[numpy.ndarray, bool]:
    """The gold tag id of each predicted token, and whether some gold entity could not be aligned.

    The same tags as spaCy's `Example.get_aligned_ents_and_ner`, mapped to `tag_ids`: a token in
    an aligned gold entity gets its BILUO tag (in `scheme`; labels missing from `tag_ids` are
    counted in `unknown` and tagged 'O'), a token aligned only to tokens annotated outside, or a
    whitespace token, 'O', any other token -1 (missing). Computed with array operations over the
    alignment instead of spaCy's loops over every token, which took a tenth of a training step.
    """
    x, y = eg.predicted, eg.reference
    ids = numpy.full(len(x), MISSING, dtype="int32")
    if not y.has_annotation("ENT_IOB"):
        return ids, False
    gold_outside = y.to_array(ENT_IOB) == IOB_OUTSIDE
    if _same_tokens(x, y):
        # Converted data keeps its tokens: no alignment needed.
        outside, ents, misaligned = (
            gold_outside,
            [(e.start, e.end, e.label_) for e in y.ents],
            False,
        )
    else:
        aligned = _align_by_characters(x, y, gold_outside)
        outside, ents, misaligned = aligned if aligned else _align_with_spacy(eg, gold_outside)
    ids[outside | x.to_array(IS_SPACE).astype(bool)] = tag_ids["O"]
    for start, end, label in ents:
        begin, inside, last, unit = (
            tag_ids.get(biluo_to_scheme(f"{prefix}-{label}", scheme)) for prefix in "BILU"
        )
        if begin is None or inside is None or last is None or unit is None:
            # An entity of a label the component does not predict counts as outside.
            unknown[label] += 1
            ids[start:end] = tag_ids["O"]
        elif end - start == 1:
            ids[start] = unit
        else:
            ids[start] = begin
            ids[start + 1 : end - 1] = inside
            ids[end - 1] = last
    return ids, misaligned


# A predicted token's gold tag: whether it is outside every entity, and the aligned entities as
# (start, end, label) spans of predicted tokens; whether some gold entity could not be aligned.
Aligned = Tuple[numpy.ndarray, List[Tuple[int, int, str]], bool]


def _same_tokens(x: Doc, y: Doc) -> bool:
    return len(x) == len(y) and bool(numpy.array_equal(x.to_array(ORTH), y.to_array(ORTH)))


def _align_by_characters(x: Doc, y: Doc, gold_outside: numpy.ndarray) -> Optional[Aligned]:
    """Align by character offsets, for a predicted doc tokenized from the reference's text (as
    `spacy.Corpus` makes examples): a predicted token is outside if every reference token it
    overlaps is, and a gold entity is aligned if predicted tokens start and end where it does.
    This is what spaCy's alignment gives for the same text, without building it token by token
    (a tenth of a training step). None where the texts differ, a token is empty, or an entity
    starts or ends with whitespace (spaCy's alignment skips whitespace): spaCy aligns those."""
    if x.text != y.text:
        return None
    x_start, x_end = char_spans(x)
    y_start, y_end = char_spans(y)
    if (x_start == x_end).any() or (y_start == y_end).any():
        return None
    y_ents = list(y.ents)
    if any(y[e.start].is_space or y[e.end - 1].is_space for e in y_ents):
        return None
    # The reference tokens first..last overlap each predicted token (none where first > last).
    first = numpy.searchsorted(y_end, x_start, side="right")
    last = numpy.searchsorted(y_start, x_end, side="left") - 1
    not_outside = numpy.concatenate([[0], numpy.cumsum(~gold_outside)])
    outside = (first <= last) & (not_outside[last + 1] == not_outside[first])
    ents = []
    for ent in y_ents:
        start = int(numpy.searchsorted(x_start, ent.start_char))
        end = int(numpy.searchsorted(x_end, ent.end_char)) + 1
        if start < end <= len(x) and (x_start[start], x_end[end - 1]) == (
            ent.start_char,
            ent.end_char,
        ):
            ents.append((start, end, ent.label_))
    return outside, ents, len(ents) < len(y_ents)


def char_spans(doc: Doc) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Each token's start and end character offsets."""
    start = doc.to_array(IDX).astype("int64")
    return start, start + doc.to_array(LENGTH).astype("int64")


def _align_with_spacy(eg: Example, gold_outside: numpy.ndarray) -> Aligned:
    """`_align_by_characters` from spaCy's alignment of the two tokenizations."""
    x = eg.predicted
    x2y = eg.alignment.x2y
    # (spaCy's x2y can hold an extra, empty entry past the last token after whitespace.)
    lengths = numpy.asarray(x2y.lengths)[: len(x)]
    outside = numpy.zeros(len(x), dtype=bool)
    aligned = lengths > 0
    if aligned.any():
        starts = (numpy.cumsum(lengths) - lengths)[aligned]
        outside[aligned] = numpy.minimum.reduceat(gold_outside[numpy.asarray(x2y.data)], starts)
    y_ents = eg.reference.ents
    aligned_ents = eg.get_aligned_spans_y2x(y_ents, allow_overlap=False)
    ents = [(ent.start, ent.end, ent.label_) for ent in aligned_ents]
    return outside, ents, len(ents) < len(y_ents)
