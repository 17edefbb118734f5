"""Tag schemes and decoding (spacy_bert_ner.decoding): pure numpy, tested exhaustively."""

import itertools
import math
from typing import List, Sequence, Tuple

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_bert_ner.decoding import (
    DECODERS,
    SCHEMES,
    biluo_to_scheme,
    check_decoder,
    check_scheme,
    decode,
    decode_batch,
    greedy,
    is_valid,
    make_constraints,
    make_tags,
    path_score,
    split_tag,
    tags_to_spans,
    viterbi,
)

LABEL_POOL = ["PER", "ORG", "LOC"]
# Keep the brute force cheap: at most this many candidate paths per example.
MAX_PATHS = 20_000


# --- helpers written independently of the module under test ----------------------------------


def reference_is_valid(tags: Sequence[str], scheme: str) -> bool:
    """Validity of a tag sequence, written from the scheme definitions (not from the masks)."""
    previous = "O"
    for tag in list(tags) + (["O"] if scheme == "BILUO" else []):
        prev_prefix, _, prev_label = previous.partition("-")
        prefix, _, label = tag.partition("-")
        if scheme == "BIO":
            if prefix == "I" and not (prev_prefix in ("B", "I") and prev_label == label):
                return False
        else:
            open_entity = prev_prefix in ("B", "I")
            if open_entity and not (prefix in ("I", "L") and label == prev_label):
                return False
            if not open_entity and prefix in ("I", "L"):
                return False
        previous = tag
    return True


def spans_to_tags(spans: List[Tuple[int, int, str]], n: int, scheme: str) -> List[str]:
    tags = ["O"] * n
    for start, end, label in spans:
        if scheme == "BILUO" and end - start == 1:
            tags[start] = f"U-{label}"
            continue
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
        if scheme == "BILUO":
            tags[end - 1] = f"L-{label}"
    return tags


def brute_force_best(log_probs: numpy.ndarray, tags: List[str], scheme: str) -> float:
    """Maximum path score over every valid path, by enumeration."""
    n_tokens, n_tags = log_probs.shape
    best = -math.inf
    for path in itertools.product(range(n_tags), repeat=n_tokens):
        if reference_is_valid([tags[i] for i in path], scheme):
            best = max(best, sum(log_probs[i, t] for i, t in enumerate(path)))
    return best


@st.composite
def decoding_problems(draw):
    scheme = draw(st.sampled_from(sorted(SCHEMES)))
    n_labels = draw(st.integers(1, 3))
    tags = make_tags(LABEL_POOL[:n_labels], scheme)
    max_tokens = max(n for n in range(7) if len(tags) ** n <= MAX_PATHS)
    n_tokens = draw(st.integers(0, max_tokens))
    raw = draw(
        st.lists(
            st.floats(0.001, 1.0, allow_nan=False),
            min_size=n_tokens * len(tags),
            max_size=n_tokens * len(tags),
        )
    )
    probs = numpy.asarray(raw, dtype="float64").reshape(n_tokens, len(tags))
    return scheme, tags, probs / probs.sum(axis=1, keepdims=True)


# --- tag inventory and argument checks -------------------------------------------------------


def test_make_tags_bio():
    assert make_tags(["PER", "ORG"], "BIO") == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]


def test_make_tags_biluo():
    assert make_tags(["LOC"], "BILUO") == ["O", "B-LOC", "I-LOC", "L-LOC", "U-LOC"]
    assert len(make_tags(["A", "B", "C"], "BILUO")) == 13


def test_make_tags_no_labels():
    assert make_tags([], "BIO") == ["O"]


def test_make_tags_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="'BIO', 'BILUO'"):
        make_tags(["PER"], "IOB2")


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
def test_check_scheme_accepts(scheme):
    assert check_scheme(scheme) == scheme


@pytest.mark.parametrize("bad", ["bio", "IOB", "", "XYZ"])
def test_check_scheme_error_lists_choices(bad):
    with pytest.raises(ValueError) as excinfo:
        check_scheme(bad)
    message = str(excinfo.value)
    assert repr(bad) in message
    assert "'BIO'" in message and "'BILUO'" in message


@pytest.mark.parametrize("decoder", ["viterbi", "greedy"])
def test_check_decoder_accepts_the_documented_decoders(decoder):
    assert check_decoder(decoder) == decoder


def test_check_decoder_error_lists_choices():
    with pytest.raises(ValueError) as excinfo:
        check_decoder("beam")
    message = str(excinfo.value)
    assert "'beam'" in message
    assert "'viterbi'" in message and "'greedy'" in message


def test_make_constraints_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="'BIO'"):
        make_constraints(["O"], "XYZ")


def test_split_tag():
    assert split_tag("B-PER") == ("B", "PER")
    assert split_tag("O") == ("O", "")
    assert split_tag("I-WORK-OF-ART") == ("I", "WORK-OF-ART")


@pytest.mark.parametrize(
    "biluo, scheme, expected",
    [
        ("U-PER", "BIO", "B-PER"),
        ("B-PER", "BIO", "B-PER"),
        ("I-PER", "BIO", "I-PER"),
        ("L-PER", "BIO", "I-PER"),
        ("O", "BIO", "O"),
        ("L-PER", "BILUO", "L-PER"),
        ("U-ORG", "BILUO", "U-ORG"),
    ],
)
def test_biluo_to_scheme(biluo, scheme, expected):
    assert biluo_to_scheme(biluo, scheme) == expected


# --- constraints -----------------------------------------------------------------------------


def test_bio_constraints():
    tags = make_tags(["PER", "ORG"], "BIO")  # O B-PER I-PER B-ORG I-ORG
    c = make_constraints(tags, "BIO")
    assert c.start.tolist() == [True, True, False, True, False]
    assert c.end.all()
    idx = {t: i for i, t in enumerate(tags)}
    assert not c.allowed[idx["O"], idx["I-PER"]]
    assert not c.allowed[idx["B-ORG"], idx["I-PER"]]
    assert not c.allowed[idx["I-ORG"], idx["I-PER"]]
    assert c.allowed[idx["B-PER"], idx["I-PER"]]
    assert c.allowed[idx["I-PER"], idx["I-PER"]]
    assert c.allowed[idx["I-PER"], idx["B-PER"]]
    assert c.allowed[idx["I-PER"], idx["O"]]


def test_biluo_constraints():
    tags = make_tags(["PER"], "BILUO")  # O B I L U
    c = make_constraints(tags, "BILUO")
    assert c.start.tolist() == [True, True, False, False, True]
    assert c.end.tolist() == [True, False, False, True, True]
    # After B or I only I/L of the same type; after O/L/U never I/L.
    assert c.allowed.astype(int).tolist() == [
        [1, 1, 0, 0, 1],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 0],
        [1, 1, 0, 0, 1],
        [1, 1, 0, 0, 1],
    ]


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["BIO", "BILUO"]),
    n_labels=st.integers(1, 3),
    data=st.data(),
)
def test_is_valid_matches_scheme_definition(scheme, n_labels, data):
    tags = make_tags(LABEL_POOL[:n_labels], scheme)
    path = data.draw(st.lists(st.integers(0, len(tags) - 1), max_size=8))
    constraints = make_constraints(tags, scheme)
    assert is_valid(path, constraints) == reference_is_valid([tags[i] for i in path], scheme)


# --- viterbi ---------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(decoding_problems())
def test_viterbi_is_valid_and_optimal(problem):
    scheme, tags, probs = problem
    log_probs = numpy.log(probs)
    constraints = make_constraints(tags, scheme)
    path = viterbi(log_probs, constraints)
    assert path.shape == (len(probs),)
    assert is_valid(path.tolist(), constraints)
    assert reference_is_valid([tags[i] for i in path], scheme)
    expected = brute_force_best(log_probs, tags, scheme)  # 0.0 for the empty path
    assert path_score(log_probs, path) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(decoding_problems())
def test_viterbi_equals_greedy_when_greedy_is_valid(problem):
    scheme, tags, probs = problem
    log_probs = numpy.log(probs)
    constraints = make_constraints(tags, scheme)
    greedy_path = greedy(log_probs, constraints)
    viterbi_path = viterbi(log_probs, constraints)
    assert is_valid(viterbi_path.tolist(), constraints)
    if is_valid(greedy_path.tolist(), constraints):
        assert path_score(log_probs, viterbi_path) == pytest.approx(
            path_score(log_probs, greedy_path)
        )
    else:  # Viterbi never returns the invalid argmax path
        assert viterbi_path.tolist() != greedy_path.tolist()


def test_viterbi_empty():
    constraints = make_constraints(make_tags(["PER"], "BIO"), "BIO")
    path = viterbi(numpy.zeros((0, 3)), constraints)
    assert path.shape == (0,)
    assert is_valid(path, constraints)


def test_greedy_can_be_invalid_viterbi_fixes_it():
    tags = make_tags(["PER"], "BIO")  # O B-PER I-PER
    probs = numpy.array(
        [
            [0.50, 0.45, 0.05],  # O narrowly beats B-PER
            [0.05, 0.05, 0.90],  # I-PER: invalid right after O
        ]
    )
    constraints = make_constraints(tags, "BIO")
    log_probs = numpy.log(probs)
    greedy_path = greedy(log_probs, constraints)
    assert [tags[i] for i in greedy_path] == ["O", "I-PER"]
    assert not is_valid(greedy_path, constraints)
    viterbi_path = viterbi(log_probs, constraints)
    assert [tags[i] for i in viterbi_path] == ["B-PER", "I-PER"]
    assert is_valid(viterbi_path, constraints)
    assert path_score(log_probs, viterbi_path) == pytest.approx(math.log(0.45 * 0.90))
    # decode() with each decoder: greedy yields the stray-I entity, viterbi the whole one.
    assert decode(probs, tags, constraints, "greedy") == [(1, 2, "PER", pytest.approx(0.9))]
    assert decode(probs, tags, constraints, "viterbi") == [(0, 2, "PER", pytest.approx(0.675))]


def test_viterbi_biluo_must_close_entity():
    tags = make_tags(["PER"], "BILUO")  # O B I L U
    probs = numpy.array(
        [
            [0.10, 0.60, 0.10, 0.10, 0.10],  # B-PER
            [0.10, 0.10, 0.60, 0.10, 0.10],  # I-PER: greedy ends on an open entity
        ]
    )
    constraints = make_constraints(tags, "BILUO")
    log_probs = numpy.log(probs)
    assert not is_valid(greedy(log_probs, constraints), constraints)
    path = viterbi(log_probs, constraints)
    assert [tags[i] for i in path] == ["B-PER", "L-PER"]


def test_viterbi_never_switches_type_inside_entity():
    tags = make_tags(["PER", "ORG"], "BIO")  # O B-PER I-PER B-ORG I-ORG
    probs = numpy.array(
        [
            [0.05, 0.80, 0.05, 0.05, 0.05],
            [0.05, 0.05, 0.30, 0.05, 0.55],  # I-ORG after B-PER is invalid
        ]
    )
    constraints = make_constraints(tags, "BIO")
    path = viterbi(numpy.log(probs), constraints)
    assert [tags[i] for i in path] == ["B-PER", "I-PER"]


# --- tags_to_spans ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags, expected",
    [
        ([], []),
        (["O", "O"], []),
        (["B-PER", "I-PER", "O", "B-LOC"], [(0, 2, "PER"), (3, 4, "LOC")]),
        (["B-PER", "I-PER", "I-PER"], [(0, 3, "PER")]),
        # A stray I- starts an entity (conlleval).
        (["O", "I-PER", "I-PER", "O"], [(1, 3, "PER")]),
        (["I-ORG"], [(0, 1, "ORG")]),
        # B- right after I- of the same type splits.
        (["B-PER", "I-PER", "B-PER", "I-PER"], [(0, 2, "PER"), (2, 4, "PER")]),
        (["B-PER", "B-PER"], [(0, 1, "PER"), (1, 2, "PER")]),
        # A type change splits, even with an I- tag.
        (["B-PER", "I-ORG", "I-ORG"], [(0, 1, "PER"), (1, 3, "ORG")]),
        (["I-PER", "I-LOC"], [(0, 1, "PER"), (1, 2, "LOC")]),
    ],
)
def test_tags_to_spans_bio(tags, expected):
    assert tags_to_spans(tags) == expected


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["U-PER", "O", "B-ORG", "I-ORG", "L-ORG"], [(0, 1, "PER"), (2, 5, "ORG")]),
        (["B-LOC", "L-LOC", "U-LOC"], [(0, 2, "LOC"), (2, 3, "LOC")]),
        (["U-PER", "U-PER"], [(0, 1, "PER"), (1, 2, "PER")]),
        # Lenient on invalid sequences: stray L-, unclosed B-, type change.
        (["O", "L-PER"], [(1, 2, "PER")]),
        (["B-PER", "I-PER"], [(0, 2, "PER")]),
        (["B-PER", "O", "U-LOC"], [(0, 1, "PER"), (2, 3, "LOC")]),
        (["B-PER", "L-ORG"], [(0, 1, "PER"), (1, 2, "ORG")]),
        (["B-PER", "I-PER", "U-PER"], [(0, 2, "PER"), (2, 3, "PER")]),
    ],
)
def test_tags_to_spans_biluo(tags, expected):
    assert tags_to_spans(tags) == expected


@settings(max_examples=200, deadline=None)
@given(scheme=st.sampled_from(["BIO", "BILUO"]), data=st.data())
def test_tags_to_spans_round_trips_valid_sequences(scheme, data):
    tags = make_tags(LABEL_POOL, scheme)
    constraints = make_constraints(tags, scheme)
    path = data.draw(st.lists(st.integers(0, len(tags) - 1), max_size=10))
    sequence = [tags[i] for i in path]
    spans = tags_to_spans(sequence)
    # Spans are well formed, ordered and disjoint, whatever the input.
    for (_, end, _), (start, _, _) in zip(spans, spans[1:]):
        assert end <= start
    assert all(0 <= s < e <= len(sequence) for s, e, _ in spans)
    assert sum(e - s for s, e, _ in spans) == sum(t != "O" for t in sequence)
    if is_valid(path, constraints):
        assert spans_to_tags(spans, len(sequence), scheme) == sequence


# --- decode ----------------------------------------------------------------------------------


def test_decode_scores_are_mean_of_decoded_tag_probs():
    tags = make_tags(["PER", "LOC"], "BIO")  # O B-PER I-PER B-LOC I-LOC
    probs = numpy.array(
        [
            [0.10, 0.70, 0.05, 0.10, 0.05],  # B-PER 0.7
            [0.20, 0.05, 0.60, 0.05, 0.10],  # I-PER 0.6
            [0.90, 0.02, 0.03, 0.03, 0.02],  # O
            [0.10, 0.05, 0.05, 0.75, 0.05],  # B-LOC 0.75
        ]
    )
    entities = decode(probs, tags, make_constraints(tags, "BIO"))
    assert [(e.start, e.end, e.label) for e in entities] == [(0, 2, "PER"), (3, 4, "LOC")]
    assert [e.score for e in entities] == pytest.approx([0.65, 0.75])
    assert all(isinstance(e.score, float) for e in entities)


def test_decode_empty_document():
    tags = make_tags(["PER"], "BIO")
    assert decode(numpy.zeros((0, 3)), tags, make_constraints(tags, "BIO")) == []


def test_decode_zero_probabilities_do_not_break_viterbi():
    tags = make_tags(["PER"], "BIO")
    probs = numpy.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    entities = decode(probs, tags, make_constraints(tags, "BIO"))
    assert entities == [(0, 2, "PER", pytest.approx(1.0))]


@settings(max_examples=100, deadline=None)
@given(decoding_problems(), st.sampled_from(DECODERS))
def test_decode_scores_property(problem, decoder):
    scheme, tags, probs = problem
    constraints = make_constraints(tags, scheme)
    entities = decode(probs, tags, constraints, decoder)
    log_probs = numpy.log(probs)
    path = viterbi(log_probs, constraints) if decoder == "viterbi" else greedy(log_probs, None)
    decoded = [tags[i] for i in path]
    assert [(e.start, e.end, e.label) for e in entities] == tags_to_spans(decoded)
    for entity in entities:
        assert 0.0 <= entity.score <= 1.0
        expected = numpy.mean([probs[i, path[i]] for i in range(entity.start, entity.end)])
        assert entity.score == pytest.approx(expected)


def test_outside_bias_trades_precision_for_recall():
    tags = make_tags(["PER"], "BILUO")  # O, B-PER, I-PER, L-PER, U-PER
    constraints = make_constraints(tags, "BILUO")
    # Token 1 is more likely outside (0.6) than a one-token PER (0.4).
    probs = numpy.array(
        [[0.9, 0.02, 0.02, 0.02, 0.04], [0.6, 0.0, 0.0, 0.0, 0.4], [0.9, 0.02, 0.02, 0.02, 0.04]]
    )
    assert decode(probs, tags, constraints) == []
    assert decode(probs, tags, constraints, outside_bias=0.3) == []  # log 0.6 - 0.3 > log 0.4
    entities = decode(probs, tags, constraints, outside_bias=0.5)
    assert [(e.start, e.end, e.label) for e in entities] == [(1, 2, "PER")]
    assert entities[0].score == pytest.approx(0.4)  # the classifier's probability, not the bias
    assert probs[1, 0] == 0.6  # the caller's array is left as it was


def reference_decode(probs, tags, constraints, decoder, outside_bias):
    """One document, the simple way: the greedy path where it is valid, else Viterbi's (with the
    greedy decoder, always the greedy path), read by tags_to_spans; scores are token means."""
    log_probs = numpy.log(numpy.maximum(probs, 1e-12))
    log_probs[:, tags.index("O")] -= outside_bias
    path = greedy(log_probs, constraints)
    if decoder == "viterbi" and not is_valid(path, constraints):
        path = viterbi(log_probs, constraints)
    token_probs = probs[numpy.arange(len(path)), path]
    return [
        (start, end, label, float(token_probs[start:end].mean()))
        for start, end, label in tags_to_spans([tags[i] for i in path])
    ]


@st.composite
def decoding_batches(draw):
    """Several documents (some empty) with the same tag inventory, their rows concatenated."""
    scheme = draw(st.sampled_from(sorted(SCHEMES)))
    tags = make_tags(LABEL_POOL[: draw(st.integers(1, 3))], scheme)
    lengths = draw(st.lists(st.integers(0, 12), min_size=0, max_size=6))
    # Peaked rows, so that greedy sequences are sometimes valid and sometimes not.
    rows = draw(
        st.lists(
            st.lists(st.floats(0.0, 1.0), min_size=len(tags), max_size=len(tags)),
            min_size=sum(lengths),
            max_size=sum(lengths),
        )
    )
    probs = numpy.asarray(rows, dtype="float32").reshape(sum(lengths), len(tags)) ** 4 + 1e-6
    return scheme, tags, lengths, probs / probs.sum(axis=1, keepdims=True)


@settings(max_examples=300, deadline=None)
@given(decoding_batches(), st.sampled_from(DECODERS), st.sampled_from([0.0, 1.5]))
def test_decode_batch_equals_decoding_each_document(batch, decoder, outside_bias):
    scheme, tags, lengths, probs = batch
    constraints = make_constraints(tags, scheme)
    together = decode_batch(probs, lengths, tags, constraints, decoder, outside_bias)
    offsets = numpy.concatenate([[0], numpy.cumsum(lengths)]).astype(int)
    one_by_one = [
        reference_decode(probs[start:end], tags, constraints, decoder, outside_bias)
        for start, end in zip(offsets[:-1], offsets[1:])
    ]
    assert len(together) == len(lengths)
    for ours, expected in zip(together, one_by_one):
        assert [e[:3] for e in ours] == [e[:3] for e in expected]
        assert [e.score for e in ours] == pytest.approx([e[3] for e in expected], abs=1e-6)


def test_decode_batch_fixes_only_the_invalid_document():
    tags = make_tags(["PER"], "BIO")  # O, B-PER, I-PER
    constraints = make_constraints(tags, "BIO")
    valid = [[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]]  # B I O
    invalid = [[0.45, 0.35, 0.2], [0.1, 0.1, 0.8]]  # O I, invalid: viterbi finds B I
    probs = numpy.array(valid + invalid + valid, dtype="float32")
    greedy_entities = decode_batch(probs, [3, 2, 0, 3], tags, constraints, "greedy")
    viterbi_entities = decode_batch(probs, [3, 2, 0, 3], tags, constraints, "viterbi")
    assert [[e[:3] for e in doc] for doc in greedy_entities] == [
        [(0, 2, "PER")],
        [(1, 2, "PER")],  # the lenient reading of O I
        [],
        [(0, 2, "PER")],
    ]
    assert [e[:3] for e in viterbi_entities[1]] == [(0, 2, "PER")]
    assert viterbi_entities[0] == greedy_entities[0] and viterbi_entities[3] == greedy_entities[3]
