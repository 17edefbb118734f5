"""Tag schemes and decoding: per-token tag probabilities -> valid tag sequences -> entity spans.

Everything here works on plain numpy arrays, so it is cheap to test exhaustively and independent of
spaCy, thinc and the device the model ran on.
"""

from functools import lru_cache
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy

SCHEMES: Dict[str, Tuple[str, ...]] = {"BIO": ("B", "I"), "BILUO": ("B", "I", "L", "U")}
DECODERS = ("viterbi", "greedy")
OUTSIDE = "O"
# Probabilities are floored before taking logs, here and in the losses (`loss.log_probs`): a zero
# becomes very unlikely, not impossible.
MIN_PROB = 1e-12
# Documents decoded together by `decode_batch`'s Viterbi (their padded scores are held at once).
VITERBI_BATCH = 256


class Entity(NamedTuple):
    """A decoded entity: token offsets [start, end), its label and its confidence in [0, 1]."""

    start: int
    end: int
    label: str
    score: float


class Constraints(NamedTuple):
    """Which tags may start a sequence, follow each other, and end a sequence."""

    start: numpy.ndarray  # bool[n_tags]
    allowed: numpy.ndarray  # bool[n_tags (previous), n_tags (current)]
    end: numpy.ndarray  # bool[n_tags]


def check_scheme(scheme: str) -> str:
    """Return the scheme name if it is supported, else raise an error that lists the choices."""
    if scheme not in SCHEMES:
        raise ValueError(
            f"Unknown tag scheme {scheme!r} for bert_ner. Set 'scheme' to one of "
            f"{', '.join(repr(s) for s in SCHEMES)} in the component's config."
        )
    return scheme


def check_decoder(decoder: str) -> str:
    """Return the decoder name if it is supported, else raise an error that lists the choices."""
    if decoder not in DECODERS:
        raise ValueError(
            f"Unknown decoder {decoder!r} for bert_ner. Set 'decoder' to one of "
            f"{', '.join(repr(d) for d in DECODERS)} in the component's config."
        )
    return decoder


def make_tags(labels: Sequence[str], scheme: str) -> List[str]:
    """The tag inventory for entity labels: 'O' first, then each label's prefixed tags."""
    prefixes = SCHEMES[check_scheme(scheme)]
    return [OUTSIDE] + [f"{prefix}-{label}" for label in labels for prefix in prefixes]


def split_tag(tag: str) -> Tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, _, label = tag.partition("-")
    return prefix, label


def biluo_to_scheme(biluo_tag: str, scheme: str) -> str:
    """Map one BILUO tag (spaCy's internal scheme) to the component's scheme."""
    if scheme == "BILUO" or biluo_tag == OUTSIDE:
        return biluo_tag
    prefix, label = split_tag(biluo_tag)
    return f"{'B' if prefix in ('B', 'U') else 'I'}-{label}"


def _can_follow(previous: str, current: str, scheme: str) -> bool:
    prev_prefix, prev_label = split_tag(previous)
    prefix, label = split_tag(current)
    if scheme == "BIO":
        return prefix != "I" or (prev_prefix in ("B", "I") and prev_label == label)
    inside = prev_prefix in ("B", "I")
    if inside:
        return prefix in ("I", "L") and prev_label == label
    return prefix in (OUTSIDE, "B", "U")


@lru_cache(maxsize=16)
def _cached_constraints(tags: Tuple[str, ...], scheme: str) -> Constraints:
    return make_constraints(tags, scheme)


def constraints_for(tags: Sequence[str], scheme: str) -> Constraints:
    """`make_constraints`, computed once per tag inventory (the result must not be modified)."""
    return _cached_constraints(tuple(tags), scheme)


def make_constraints(tags: Sequence[str], scheme: str) -> Constraints:
    """The scheme's valid transitions as boolean masks (BIO: no I-X after O or another type)."""
    check_scheme(scheme)
    start = numpy.array([_can_follow(OUTSIDE, tag, scheme) for tag in tags], dtype=bool)
    allowed = numpy.array(
        [[_can_follow(prev, cur, scheme) for cur in tags] for prev in tags], dtype=bool
    )
    if scheme == "BILUO":
        end = numpy.array([split_tag(tag)[0] not in ("B", "I") for tag in tags], dtype=bool)
    else:
        end = numpy.ones(len(tags), dtype=bool)
    return Constraints(start, allowed, end)


def viterbi(
    log_probs: numpy.ndarray,
    constraints: Constraints,
    transitions: Optional[numpy.ndarray] = None,
) -> numpy.ndarray:
    """The highest-scoring tag sequence among the valid ones: the sum of its log-probabilities,
    plus, with a CRF's learned `transitions` (n_tags x n_tags), the score of each pair of
    consecutive tags."""
    path = numpy.zeros((len(log_probs),), dtype="int64")
    if len(log_probs):
        one_doc = numpy.array([0]), numpy.array([len(log_probs)])
        _viterbi_docs(log_probs, *one_doc, constraints, transitions, path)
    return path


def _viterbi_docs(
    log_probs: numpy.ndarray,
    starts: numpy.ndarray,
    lengths: numpy.ndarray,
    constraints: Constraints,
    transitions: Optional[numpy.ndarray],
    path: numpy.ndarray,
) -> None:
    """`viterbi` for the documents whose rows of `log_probs` start at `starts` (`lengths` rows
    each, at least one), written into `path`. Documents of similar length are decoded together,
    a position at a time for all of them, `VITERBI_BATCH` at most at once, without a Python loop
    over every token of every document (with a CRF, every document is decoded)."""
    if not len(starts):
        return
    learned = 0.0 if transitions is None else transitions
    step = numpy.where(constraints.allowed, learned, -numpy.inf)
    first = numpy.where(constraints.start, 0.0, -numpy.inf)
    last = numpy.where(constraints.end, 0.0, -numpy.inf)
    order = numpy.argsort(lengths, kind="stable")
    for batch in numpy.array_split(order, -(-len(order) // VITERBI_BATCH)):
        batch_lengths = lengths[batch]
        positions = numpy.arange(int(batch_lengths.max()))
        active = positions[None, :] < batch_lengths[:, None]
        rows = numpy.where(active, starts[batch][:, None] + positions[None, :], 0)
        emissions = log_probs[rows]
        score = emissions[:, 0] + first
        backpointers = numpy.zeros(rows.shape + (step.shape[0],), dtype="int64")
        for i in positions[1:]:
            candidates = score[:, :, None] + step
            backpointers[:, i] = candidates.argmax(axis=1)
            after = candidates.max(axis=1) + emissions[:, i]
            score = numpy.where(active[:, i, None], after, score)
        current = (score + last).argmax(axis=1)
        batch_path = numpy.zeros(rows.shape, dtype="int64")
        batch_path[:, -1] = current
        docs = numpy.arange(len(batch))
        for i in positions[:0:-1]:
            current = numpy.where(active[:, i], backpointers[docs, i, current], current)
            batch_path[:, i - 1] = current
        path[rows[active]] = batch_path[active]


def greedy(log_probs: numpy.ndarray, constraints: Constraints) -> numpy.ndarray:
    """The most probable tag of each token on its own; the sequence may be invalid."""
    return log_probs.argmax(axis=1).astype("int64")


def path_score(log_probs: numpy.ndarray, path: Sequence[int]) -> float:
    """Sum of the log-probabilities along a tag path."""
    return float(sum(log_probs[i, tag] for i, tag in enumerate(path)))


def is_valid(path: Union[Sequence[int], numpy.ndarray], constraints: Constraints) -> bool:
    """Whether a tag path obeys the scheme's start, transition and end constraints."""
    tags = numpy.asarray(path, dtype="int64")
    return bool(_valid_sequences(tags, numpy.array([0]), numpy.array([len(tags)]), constraints)[0])


def _valid_sequences(
    path: numpy.ndarray, starts: numpy.ndarray, ends: numpy.ndarray, constraints: Constraints
) -> numpy.ndarray:
    """`is_valid` for each of the sequences path[starts[i]:ends[i]], which follow each other in
    `path`: whether it starts and ends with allowed tags and each of its transitions is allowed
    (a pair of tags across two sequences is no transition)."""
    valid = numpy.ones(len(starts), dtype=bool)
    filled = ends > starts
    first, last = path[starts[filled]], path[ends[filled] - 1]
    valid[filled] = constraints.start[first] & constraints.end[last]
    bad_pair = ~constraints.allowed[path[:-1], path[1:]]
    bad_pair[starts[(starts > 0) & filled] - 1] = False
    valid[numpy.searchsorted(ends, numpy.flatnonzero(bad_pair), side="right")] = False
    return valid


def tags_to_spans(tags: Sequence[str]) -> List[Tuple[int, int, str]]:
    """Merge consecutive tags into (start, end, label) token spans.

    Lenient like conlleval: an I-/L- tag that cannot continue the current entity starts a new one,
    so even an invalid (greedy) sequence yields well-formed spans.
    """
    spans: List[Tuple[int, int, str]] = []
    start, label = -1, ""
    for i, tag in enumerate(tags):
        prefix, tag_label = split_tag(tag)
        if prefix == OUTSIDE or prefix in ("B", "U") or tag_label != label:
            if start >= 0:
                spans.append((start, i, label))
            start, label = (-1, "") if prefix == OUTSIDE else (i, tag_label)
        if prefix in ("L", "U") and start >= 0:
            spans.append((start, i + 1, label))
            start, label = -1, ""
    if start >= 0:
        spans.append((start, len(tags), label))
    return spans


def decode(
    probs: numpy.ndarray,
    tags: Sequence[str],
    constraints: Constraints,
    decoder: str = "viterbi",
    outside_bias: float = 0.0,
    transitions: Optional[numpy.ndarray] = None,
) -> List[Entity]:
    """Decode one document's tag probabilities into entities with confidences.

    An entity's score is the mean, over its tokens, of the probability the classifier gave to the
    decoded tag: the same "average" aggregation Hugging Face's token-classification pipeline uses.
    `outside_bias` is subtracted from the log-probability of 'O' before decoding: above 0, tokens
    the classifier is unsure about become entities (more recall, less precision); the scores are
    the classifier's own probabilities either way.
    """
    lengths = [len(probs)]
    return decode_batch(probs, lengths, tags, constraints, decoder, outside_bias, transitions)[0]


def decode_batch(
    probs: numpy.ndarray,
    lengths: Sequence[int],
    tags: Sequence[str],
    constraints: Constraints,
    decoder: str = "viterbi",
    outside_bias: float = 0.0,
    transitions: Optional[numpy.ndarray] = None,
) -> List[List[Entity]]:
    """`decode` for a batch of documents, whose tag probabilities are `probs`' rows one document
    after another (`lengths[i]` rows for document i); a list of entities per document.

    Each document's greedy sequence (the most probable tag of each token) is its result when it
    is valid, as it mostly is for a trained model; the others get `viterbi` (with the greedy
    decoder: `tags_to_spans`' lenient reading). With a CRF's learned `transitions`, the viterbi
    decoder decodes every document with them. The greedy tags, their validity and the entities of
    valid sequences are computed in array operations over the whole batch, not document by
    document (which, with the model on a GPU, took a fifth of annotating).
    """
    doc_lengths = numpy.asarray(lengths, dtype="int64")
    ends = numpy.cumsum(doc_lengths)
    starts = ends - doc_lengths
    log_probs = numpy.log(numpy.maximum(probs, MIN_PROB))
    if outside_bias:
        log_probs[:, list(tags).index(OUTSIDE)] -= outside_bias
    path = greedy(log_probs, constraints)
    valid = _valid_sequences(path, starts, ends, constraints)
    if decoder == "viterbi":
        redo = numpy.flatnonzero((doc_lengths > 0) & (~valid | (transitions is not None)))
        _viterbi_docs(log_probs, starts[redo], doc_lengths[redo], constraints, transitions, path)
        valid[:] = True
    token_probs = probs[numpy.arange(len(path)), path]
    entities = _valid_entities(path, token_probs, starts, ends, tags)
    for i in numpy.flatnonzero(~valid):
        doc_probs = token_probs[starts[i] : ends[i]]
        doc_tags = [tags[t] for t in path[starts[i] : ends[i]]]
        entities[i] = [
            Entity(start, end, label, float(doc_probs[start:end].mean()))
            for start, end, label in tags_to_spans(doc_tags)
        ]
    return entities


def _valid_entities(
    path: numpy.ndarray,
    token_probs: numpy.ndarray,
    starts: numpy.ndarray,
    ends: numpy.ndarray,
    tags: Sequence[str],
) -> List[List[Entity]]:
    """The entities of valid tag sequences (what `tags_to_spans` reads in them), per document:
    each starts at a B- or U- tag and runs to the next tag that does not continue it (B-, U-, O)
    or to the end of its document."""
    prefixes = [split_tag(tag)[0] for tag in tags]
    labels = [split_tag(tag)[1] for tag in tags]
    begins = numpy.array([p in ("B", "U") for p in prefixes])[path]
    continues = numpy.array([p in ("I", "L") for p in prefixes])[path]
    breaks = numpy.union1d(numpy.flatnonzero(~continues), ends)
    entity_starts = numpy.flatnonzero(begins)
    entity_ends = breaks[numpy.searchsorted(breaks, entity_starts, side="right")]
    sums = numpy.concatenate([[0.0], numpy.cumsum(token_probs, dtype="float64")])
    scores = (sums[entity_ends] - sums[entity_starts]) / (entity_ends - entity_starts)
    docs = numpy.searchsorted(ends, entity_starts, side="right")
    entities: List[List[Entity]] = [[] for _ in starts]
    for doc, start, end, tag, score in zip(
        docs.tolist(),
        entity_starts.tolist(),
        entity_ends.tolist(),
        path[entity_starts].tolist(),
        scores.tolist(),
    ):
        offset = int(starts[doc])
        entities[doc].append(Entity(start - offset, end - offset, labels[tag], score))
    return entities
