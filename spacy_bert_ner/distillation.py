"""Distillation: train on the tag probabilities of trained pipelines (teachers) and the gold tags.

`add_teacher_targets` runs each teacher's `bert_ner` over training documents, as they are
tokenized, and stores the teachers' mean tag probabilities on each doc (`doc.user_data`, which a
DocBin keeps with `store_user_data=True`). With `teacher_weight` above 0, the component's loss is
then the cross-entropy against a mix of the gold tags and those probabilities: a small ensemble's
knowledge distilled into one model, whose inference costs one model. From the command line:

    python -m spacy_bert_ner distill corpus/train.spacy corpus/train_teacher.spacy TEACHER ...
    python -m spacy train CONFIG --paths.train corpus/train_teacher.spacy \\
        --components.bert_ner.teacher_weight 0.5
"""

from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import minibatch
from thinc.api import to_numpy

from .gold import char_spans

# doc.user_data key: {"tags": [tag, ...], "probs": float16 array, one row per token}.
TEACHER_KEY = "bert_ner.teacher"


class DistillError(ValueError):
    """A teacher or corpus that cannot give targets, with what to do about it."""


def add_teacher_targets(
    docs: Sequence[Doc],
    teachers: Sequence[Language],
    component: str = "bert_ner",
    batch_size: int = 64,
    progress: Optional[Callable[[int], None]] = None,
) -> List[str]:
    """Store on each doc the mean of the teachers' tag probabilities for its tokens; returns the
    tags (their columns). Each teacher sees the doc's own tokens (not re-tokenized text), so the
    rows match the training tokens; docs are annotated in place, and their entities are untouched.
    `progress` is called with the number of docs done, per batch and teacher."""
    if not teachers:
        raise DistillError("[bert_ner] distill: give at least one teacher pipeline.")
    tags = teacher_tags(teachers, component)
    totals = [numpy.zeros((len(doc), len(tags)), dtype="float32") for doc in docs]
    for teacher in teachers:
        for start, probs in _predict(teacher, component, docs, batch_size):
            for offset, doc_probs in enumerate(probs):
                totals[start + offset] += doc_probs
            if progress is not None:
                progress(len(probs))
    for doc, total in zip(docs, totals):
        doc.user_data[TEACHER_KEY] = {
            "tags": tags,
            "probs": (total / len(teachers)).astype("float16"),
        }
    return tags


def teacher_tags(teachers: Sequence[Language], component: str) -> List[str]:
    """The tags every teacher predicts, or an error naming the teacher that differs."""
    tags: Optional[List[str]] = None
    for i, teacher in enumerate(teachers):
        if component not in teacher.pipe_names:
            raise DistillError(
                f"[bert_ner] distill: teacher {i + 1} has no '{component}' component (its "
                f"pipeline: {teacher.pipe_names}); teachers are trained bert_ner pipelines."
            )
        own = list(teacher.get_pipe(component).tags)  # type: ignore[attr-defined]
        if tags is None:
            tags = own
        elif own != tags:
            raise DistillError(
                f"[bert_ner] distill: teacher {i + 1} predicts the tags {own}, teacher 1 {tags}. "
                "An ensemble's probabilities are averaged tag by tag: train the teachers with the "
                "same labels and scheme."
            )
    assert tags is not None
    return tags


def _predict(
    teacher: Language, component: str, docs: Sequence[Doc], batch_size: int
) -> Iterable[tuple]:
    """(index of the batch's first doc, the teacher's tag probabilities per doc) per batch."""
    upstream = teacher.pipe_names[: teacher.pipe_names.index(component)]
    pipe = teacher.get_pipe(component)
    start = 0
    with teacher.select_pipes(enable=upstream):
        for batch in minibatch(docs, batch_size):
            copies = [
                Doc(
                    teacher.vocab,
                    words=[t.text for t in d],
                    spaces=[bool(t.whitespace_) for t in d],
                )
                for d in batch
            ]
            processed = list(teacher.pipe(copies, batch_size=len(copies)))
            yield start, [to_numpy(p) for p in pipe.predict(processed)]  # type: ignore[attr-defined]
            start += len(batch)


def slice_teacher_targets(doc: Doc, start: int, end: int, piece: Doc) -> None:
    """Give `piece` (the tokens start..end of `doc`, as a Doc) its rows of the teacher targets."""
    targets = doc.user_data.get(TEACHER_KEY)
    if targets is not None:
        piece.user_data[TEACHER_KEY] = {
            "tags": targets["tags"],
            "probs": targets["probs"][start:end],
        }


def teacher_probs(reference: Doc, tags: Sequence[str], name: str) -> Optional[numpy.ndarray]:
    """The teacher probabilities stored on `reference`, one row per token, checked against the
    component's `tags`; None when it carries none."""
    targets: Optional[Dict] = reference.user_data.get(TEACHER_KEY)
    if targets is None:
        return None
    if list(targets["tags"]) != list(tags):
        raise DistillError(
            f"[bert_ner] '{name}' predicts the tags {list(tags)}, but the teacher targets on the "
            f"training docs are for {list(targets['tags'])}. Make the targets with teachers "
            "trained on the same labels and scheme."
        )
    probs = numpy.asarray(targets["probs"], dtype="float32")
    if len(probs) != len(reference):
        raise DistillError(
            f"[bert_ner] A training doc has {len(reference)} tokens but teacher targets for "
            f"{len(probs)}: the doc was changed after `distill`. Make the targets again."
        )
    return probs


def batch_teacher_rows(
    examples: Sequence[Example], tags: Sequence[str], name: str
) -> Optional[numpy.ndarray]:
    """The teacher probabilities of every predicted token of the batch, the docs one after
    another (`teacher_rows`; NaN rows where there are none), or None when no doc of the batch
    carries them."""
    rows = [teacher_rows(eg.predicted, eg.reference, tags, name) for eg in examples]
    if all(r is None for r in rows):
        return None
    n_tags = len(tags)
    return numpy.concatenate(
        [
            numpy.full((len(eg.predicted), n_tags), numpy.nan, dtype="float32") if r is None else r
            for eg, r in zip(examples, rows)
        ]
    )


def teacher_rows(
    predicted: Doc, reference: Doc, tags: Sequence[str], name: str
) -> Optional[numpy.ndarray]:
    """The teacher probabilities of each predicted token, aligned by character offsets as
    `gold` aligns the gold tags: a predicted token takes the rows of the reference token with its
    exact span, NaN rows where there is none (or the texts differ). None when the reference
    carries no teacher probabilities."""
    probs = teacher_probs(reference, tags, name)
    if probs is None:
        return None
    x_start, x_end = char_spans(predicted)
    y_start, y_end = char_spans(reference)
    if numpy.array_equal(x_start, y_start) and numpy.array_equal(x_end, y_end):
        return probs
    rows = numpy.full((len(predicted), len(tags)), numpy.nan, dtype="float32")
    if predicted.text != reference.text or not len(reference):
        return rows
    j = numpy.minimum(numpy.searchsorted(y_start, x_start), len(reference) - 1)
    same = (y_start[j] == x_start) & (y_end[j] == x_end)
    rows[same] = probs[j[same]]
    return rows


def check_teacher_weight(value: float) -> float:
    """`teacher_weight` as a float in [0, 1], or a clear error."""
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(
            f"[bert_ner] teacher_weight must be in [0, 1], got {value}: 0 trains on the gold "
            "tags alone, 0.5 on an even mix of gold tags and teacher probabilities."
        )
    return float(value)


def check_teacher_targets(name: str, teacher_weight: float, examples: Iterable[Example]) -> None:
    """Raise where a component with `teacher_weight` above 0 trains on docs of which none (among
    `examples`) carries teacher probabilities."""
    if not any(TEACHER_KEY in eg.reference.user_data for eg in examples):
        raise ValueError(
            f"[bert_ner] '{name}' has teacher_weight = {teacher_weight}, but the training docs "
            "carry no teacher probabilities. Make them with `python -m spacy_bert_ner distill "
            "TRAIN.spacy OUT.spacy TEACHER...` and train on OUT.spacy, or set "
            "teacher_weight = 0.0."
        )
