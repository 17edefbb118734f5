"""The CRF (spacy_bert_ner.crf, TokenClassifier.v3 with crf = true): its loss and gradients against
brute-force enumeration of every tag sequence, decoding with learned transitions, and training,
saving and loading a pipeline with it."""

import itertools
from typing import List, Sequence, Tuple

import numpy
import pytest
from thinc.api import fix_random_seed
from util import build_nlp, small_tok2vec, train

from spacy_bert_ner.crf import crf_loss
from spacy_bert_ner.decoding import decode_batch, make_constraints, make_tags, viterbi

CRF_OVERRIDES = {"components.bert_ner.model.crf": True}


def valid_paths(n_tokens: int, tags: Sequence[str], scheme: str) -> List[Tuple[int, ...]]:
    constraints = make_constraints(tags, scheme)
    paths = []
    for path in itertools.product(range(len(tags)), repeat=n_tokens):
        ok = constraints.start[path[0]] and constraints.end[path[-1]]
        ok = ok and all(constraints.allowed[a, b] for a, b in zip(path, path[1:]))
        if ok:
            paths.append(path)
    return paths


def path_scores(
    paths: List[Tuple[int, ...]], log_probs: numpy.ndarray, transitions: numpy.ndarray
) -> numpy.ndarray:
    return numpy.array(
        [
            sum(log_probs[i, t] for i, t in enumerate(path))
            + sum(transitions[a, b] for a, b in zip(path, path[1:]))
            for path in paths
        ],
        dtype="float64",
    )


def brute_force(log_probs, gold, transitions, tags, scheme):
    """Loss, emission gradient and transition gradient of one sequence, by enumeration."""
    n_tokens, n_tags = log_probs.shape
    paths = valid_paths(n_tokens, tags, scheme)
    scores = path_scores(paths, log_probs, transitions)
    fits = numpy.array(
        [all(g < 0 or g == t for g, t in zip(gold, path)) for path in paths], dtype=bool
    )

    def distribution(keep):
        weights = numpy.where(keep, numpy.exp(scores - scores[keep].max()), 0.0)
        return weights / weights.sum()

    everything, gold_only = distribution(numpy.ones_like(fits)), distribution(fits)
    loss = -numpy.log(numpy.exp(scores[fits]).sum() / numpy.exp(scores).sum())
    d_emissions = numpy.zeros((n_tokens, n_tags))
    d_transitions = numpy.zeros((n_tags, n_tags))
    for path, p, q in zip(paths, everything, gold_only):
        for i, t in enumerate(path):
            d_emissions[i, t] += p - q
        for a, b in zip(path, path[1:]):
            d_transitions[a, b] += p - q
    return loss, d_emissions, d_transitions


@pytest.mark.parametrize("scheme", ["BILUO", "BIO"])
def test_crf_loss_and_gradients_match_enumeration(scheme):
    rng = numpy.random.default_rng(0)
    tags = make_tags(["A", "B"], scheme)
    n_tags = len(tags)
    lengths = [3, 1, 4, 0]
    log_probs = numpy.log(rng.dirichlet(numpy.ones(n_tags), size=sum(lengths))).astype("float32")
    transitions = rng.normal(0, 1, (n_tags, n_tags)).astype("float32")
    # Annotated tags: valid sequences, one token missing in the first and last sequence.
    gold_paths = [[tags.index(t) for t in seq] for seq in _gold(scheme)]
    gold = numpy.array([t for path in gold_paths for t in path], dtype="int32")
    gold[1] = -1
    gold[6] = -1
    loss, d_emissions, d_transitions = crf_loss(
        log_probs,
        numpy.array(lengths),
        gold,
        transitions,
        make_constraints(tags, scheme),
    )
    expected_loss = 0.0
    expected_d_transitions = numpy.zeros_like(d_transitions)
    start = 0
    for length in lengths:
        if not length:
            continue
        rows = slice(start, start + length)
        one_loss, one_d_emissions, one_d_transitions = brute_force(
            log_probs[rows], gold[rows], transitions, tags, scheme
        )
        expected_loss += one_loss
        numpy.testing.assert_allclose(d_emissions[rows], one_d_emissions, atol=1e-5)
        expected_d_transitions += one_d_transitions
        start += length
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    numpy.testing.assert_allclose(d_transitions, expected_d_transitions, atol=1e-5)
    # The emission gradient is also the softmax input's: each token's row sums to 0.
    numpy.testing.assert_allclose(d_emissions.sum(axis=1), 0.0, atol=1e-5)


def _gold(scheme: str) -> List[List[str]]:
    if scheme == "BILUO":
        return [["B-A", "L-A", "O"], ["U-B"], ["O", "B-B", "I-B", "L-B"]]
    return [["B-A", "I-A", "O"], ["B-B"], ["O", "B-B", "I-B", "I-B"]]


def test_crf_loss_without_tokens_is_zero():
    tags = make_tags(["A"], "BILUO")
    loss, d_emissions, d_transitions = crf_loss(
        numpy.zeros((0, 5), dtype="float32"),
        numpy.array([0, 0]),
        numpy.zeros(0, dtype="int32"),
        numpy.ones((5, 5), dtype="float32"),
        make_constraints(tags, "BILUO"),
    )
    assert loss == 0.0 and d_emissions.shape == (0, 5) and not d_transitions.any()


@pytest.mark.parametrize("seed", range(5))
def test_viterbi_with_transitions_finds_the_best_valid_path(seed):
    rng = numpy.random.default_rng(seed)
    tags = make_tags(["A", "B"], "BILUO")
    log_probs = numpy.log(rng.dirichlet(numpy.ones(len(tags)), size=4))
    transitions = rng.normal(0, 2, (len(tags), len(tags)))
    paths = valid_paths(4, tags, "BILUO")
    best = paths[int(path_scores(paths, log_probs, transitions).argmax())]
    found = viterbi(log_probs, make_constraints(tags, "BILUO"), transitions)
    assert tuple(found.tolist()) == best


def test_decode_batch_decodes_valid_greedy_paths_with_the_transitions():
    tags = make_tags(["A"], "BILUO")  # O, B-A, I-A, L-A, U-A
    constraints = make_constraints(tags, "BILUO")
    # Each token is most probably U-A (a valid greedy path: two one-token entities) ...
    probs = numpy.array([[0.1, 0.35, 0.0, 0.0, 0.55], [0.1, 0.0, 0.0, 0.35, 0.55]])
    assert [e[:3] for e in decode_batch(probs, [2], tags, constraints)[0]] == [
        (0, 1, "A"),
        (1, 2, "A"),
    ]
    # ... but learned transitions that make U-A after U-A unlikely and B-A -> L-A likely merge them.
    transitions = numpy.zeros((5, 5))
    transitions[4, 4] = -3.0
    transitions[1, 3] = 1.0
    found = decode_batch(probs, [2], tags, constraints, transitions=transitions)[0]
    assert [e[:3] for e in found] == [(0, 2, "A")]
    # The entity's score stays the classifier's mean probability of the decoded tags.
    assert found[0].score == pytest.approx(0.35)


# --- the component with a CRF ----------------------------------------------------------------


@pytest.fixture(scope="module")
def crf_trained(tiny_bert: str):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    fix_random_seed(0)
    nlp = build_nlp(tiny_bert, overrides=CRF_OVERRIDES)
    losses = train(nlp, 12)
    torch.set_num_threads(threads)
    return nlp, losses


def test_crf_pipeline_learns_and_round_trips(crf_trained, tmp_path):
    import spacy
    from synthetic import make_examples

    nlp, losses = crf_trained
    ner = nlp.get_pipe("bert_ner")
    transitions = ner.model.get_ref("transitions").get_param("T")
    assert transitions.shape == (len(ner.tags), len(ner.tags))
    assert numpy.abs(transitions).max() > 0.01  # trained, not left at 0
    assert losses[-1] < 0.5 * losses[0]
    assert nlp.evaluate(make_examples(nlp, 30, 1))["ents_f"] >= 0.9
    text = "john smith works for acme corp in paris ."
    expected = [(e.text, e.label_) for e in nlp(text).ents]
    assert expected == [("john smith", "PER"), ("acme corp", "ORG"), ("paris", "LOC")]
    nlp.to_disk(tmp_path)
    loaded = spacy.load(tmp_path)
    loaded_ner = loaded.get_pipe("bert_ner")
    numpy.testing.assert_array_equal(
        loaded_ner.model.get_ref("transitions").get_param("T"), transitions
    )
    assert [(e.text, e.label_) for e in loaded(text).ents] == expected


@pytest.mark.parametrize("rate_scale", [1.0, 10.0])
def test_crf_loss_is_what_the_component_trains_on(tiny_bert, rate_scale):
    """get_loss with a CRF returns crf_loss's value and emission gradient, and adds its
    transition gradient to the model; with crf_rate_scale the layer holds the scores divided by
    the scale, so its gradient is the scores' times the scale (Adam's steps then move the scores
    that many times further)."""
    from synthetic import make_examples

    from spacy_bert_ner.decoding import constraints_for

    fix_random_seed(0)
    overrides = {**CRF_OVERRIDES, "components.bert_ner.model.crf_rate_scale": rate_scale}
    nlp = build_nlp(tiny_bert, overrides=overrides)
    examples = make_examples(nlp, 4, 0)
    nlp.initialize(lambda: examples)
    ner = nlp.get_pipe("bert_ner")
    layer = ner.model.get_ref("transitions")
    layer.set_param("T", numpy.random.default_rng(0).normal(size=layer.get_param("T").shape))
    docs = list(nlp.get_pipe("transformer").pipe(eg.predicted for eg in examples))
    scores = ner.predict(docs)
    loss, d_scores = ner.get_loss(examples, scores)
    gold = ner._gold_tag_ids(examples)
    expected = crf_loss(
        numpy.log(numpy.concatenate(scores)),
        numpy.array([len(s) for s in scores]),
        gold,
        layer.get_param("T") * rate_scale,
        constraints_for(ner.tags, "BILUO"),
    )
    assert loss == pytest.approx(expected[0], rel=1e-4)
    numpy.testing.assert_allclose(numpy.concatenate(d_scores), expected[1], atol=1e-5)
    numpy.testing.assert_allclose(layer.get_grad("T"), expected[2] * rate_scale, atol=1e-4)
    # Decoding uses the scores, not the stored parameter.
    numpy.testing.assert_allclose(ner._transitions(), layer.get_param("T") * rate_scale)


def test_crf_with_teacher_weight_is_an_error(tiny_bert):
    from synthetic import make_examples

    from spacy_bert_ner.distillation import TEACHER_KEY

    nlp = build_nlp(
        tiny_bert, overrides={**CRF_OVERRIDES, "components.bert_ner.teacher_weight": 0.5}
    )
    examples = make_examples(nlp, 4, 0)
    for eg in examples:
        eg.reference.user_data[TEACHER_KEY] = {"tags": [], "probs": numpy.zeros((0, 0))}
    nlp.initialize(lambda: examples)
    with pytest.raises(ValueError, match="has a CRF.*teacher_weight = 0.0, or crf = false"):
        nlp.update(examples)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_legacy_configs_resolve_and_load_pipelines_saved_by_them(version):
    """Configs naming the superseded TokenClassifier versions (`legacy`) still build: a pipeline
    saved with one loads from disk into the same config and predicts the same; v2's model is v3's
    without a CRF (a v3 model's weights load into it)."""
    import spacy
    from spacy.training import Example

    def pipeline(architecture: str):
        model = {"@architectures": f"spacy_bert_ner.TokenClassifier.{architecture}"}
        model["tok2vec"] = small_tok2vec(8)
        if architecture != "v1":
            model["features"] = None
        nlp = spacy.blank("en")
        nlp.add_pipe("bert_ner", config={"model": model})
        return nlp

    nlp = pipeline(version)
    examples = [
        Example.from_dict(
            nlp.make_doc("anna lives in paris"), {"entities": ["U-PER", "O", "O", "U-LOC"]}
        )
    ]
    fix_random_seed(0)
    nlp.initialize(lambda: examples)
    nlp.update(examples)
    output_layer = nlp.get_pipe("bert_ner").model.get_ref("output_layer")
    assert output_layer.name == "softmax"
    loaded = pipeline(version).from_bytes(nlp.to_bytes())
    text = "anna lives in berlin"
    probs = nlp.get_pipe("bert_ner").predict([nlp.make_doc(text)])[0]
    numpy.testing.assert_array_equal(
        loaded.get_pipe("bert_ner").predict([loaded.make_doc(text)])[0], probs
    )
    if version == "v2":
        v3 = pipeline("v3").from_bytes(nlp.to_bytes())
        assert [n.name for n in v3.get_pipe("bert_ner").model.walk()] == [
            n.name for n in nlp.get_pipe("bert_ner").model.walk()
        ]
        numpy.testing.assert_array_equal(
            v3.get_pipe("bert_ner").predict([v3.make_doc(text)])[0], probs
        )


def test_v3_with_crf_adds_the_transitions():
    from spacy.util import registry

    def build(**settings):
        return registry.resolve(
            {
                "model": {
                    "@architectures": "spacy_bert_ner.TokenClassifier.v3",
                    "tok2vec": small_tok2vec(8),
                    **settings,
                }
            }
        )["model"]

    assert not build().has_ref("transitions")
    with_crf = build(crf=True)
    assert with_crf.get_ref("transitions").name == "crf_transitions"
    assert set(build().ref_names) < set(with_crf.ref_names)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_transitions", [False, True])
def test_decode_batch_paths_are_viterbis_doc_by_doc(seed, with_transitions, monkeypatch):
    """decode_batch decodes documents of similar length together: the same entities as
    `viterbi` on each document alone, however the batch is split."""
    from spacy_bert_ner import decoding

    monkeypatch.setattr(decoding, "VITERBI_BATCH", 3)
    rng = numpy.random.default_rng(seed)
    tags = make_tags(["A", "B"], "BILUO")
    constraints = make_constraints(tags, "BILUO")
    lengths = rng.integers(0, 9, size=11)
    probs = rng.dirichlet(numpy.full(len(tags), 0.3), size=int(lengths.sum()))
    transitions = rng.normal(0, 1, (len(tags), len(tags))) if with_transitions else None
    found = decode_batch(probs, lengths, tags, constraints, transitions=transitions)
    start = 0
    for length, entities in zip(lengths, found):
        doc_probs = probs[start : start + length]
        path = viterbi(numpy.log(numpy.maximum(doc_probs, 1e-12)), constraints, transitions)
        expected = [
            (s, e, label) for s, e, label in decoding.tags_to_spans([tags[t] for t in path])
        ]
        assert [entity[:3] for entity in entities] == expected
        start += length


def test_crf_rate_scale_must_be_positive():
    from spacy_bert_ner.crf import Transitions

    with pytest.raises(ValueError, match="crf_rate_scale"):
        Transitions(5, rate_scale=0.0)
