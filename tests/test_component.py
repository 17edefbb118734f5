"""The `bert_ner` component end to end, with the project config over a tiny local BERT."""

import math
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Tuple

import numpy
import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example, offsets_to_biluo_tags
from spacy.util import load_config
from synthetic import make_examples
from thinc.api import fix_random_seed
from util import CONFIG_PATH, build_nlp, train

from spacy_bert_ner.decoding import biluo_to_scheme
from spacy_bert_ner.pipeline_component import DEFAULT_MODEL, BertNER

EPOCHS = 15
TEXTS = [
    "john smith works for acme corp in paris .",
    "mary jones said google will grow .",
    "in berlin , red cross hired li wei .",
    "the weather was fine and nothing happened .",
    "yesterday ahmed khan visited new york with peter .",
]
EXPECTED = {
    TEXTS[0]: [("john smith", "PER"), ("acme corp", "ORG"), ("paris", "LOC")],
    TEXTS[1]: [("mary jones", "PER"), ("google", "ORG")],
    TEXTS[2]: [("berlin", "LOC"), ("red cross", "ORG"), ("li wei", "PER")],
    TEXTS[3]: [],
    TEXTS[4]: [("ahmed khan", "PER"), ("new york", "LOC"), ("peter", "PER")],
}
# The current model over spaCy's own tok2vec instead of the transformer's listener (the casing
# features stay, as by default).
HASH_EMBED_MODEL = {
    "@architectures": "spacy_bert_ner.TokenClassifier.v3",
    "hidden_width": 0,
    "tok2vec": {
        "@architectures": "spacy.HashEmbedCNN.v2",
        "width": 64,
        "depth": 2,
        "embed_size": 2000,
        "window_size": 1,
        "maxout_pieces": 3,
        "subword_features": True,
        "pretrained_vectors": None,
    },
}


def ents(doc: Doc) -> List[Tuple[str, str]]:
    return [(ent.text, ent.label_) for ent in doc.ents]


def ent_offsets(doc: Doc) -> List[Tuple[str, str, int, int]]:
    return [(ent.text, ent.label_, ent.start, ent.end) for ent in doc.ents]


def dev_f1(nlp: Language) -> Dict[str, Any]:
    return nlp.evaluate(make_examples(nlp, 30, 1))


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """One intra-op thread: the tiny model gains nothing from more, and on a busy 2-core machine
    torch's spinning worker threads make training many times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def trained(tiny_bert: str) -> SimpleNamespace:
    fix_random_seed(0)
    nlp = build_nlp(tiny_bert)
    epoch_losses = train(nlp, EPOCHS)
    return SimpleNamespace(nlp=nlp, epoch_losses=epoch_losses)


@pytest.fixture(scope="module")
def saved(trained: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bert-ner-pipeline")
    trained.nlp.to_disk(path)
    return path


# --- learning --------------------------------------------------------------------------------


def test_learns_synthetic_data(trained):
    scores = dev_f1(trained.nlp)
    assert scores["ents_f"] >= 0.95
    per_type = scores["ents_per_type"]
    assert set(per_type) == {"PER", "ORG", "LOC"}
    for label, prf in per_type.items():
        assert prf["f"] >= 0.9, label
    assert trained.nlp.get_pipe("bert_ner").labels == ("LOC", "ORG", "PER")


def test_predicts_expected_entities(trained):
    for text, expected in EXPECTED.items():
        assert ents(trained.nlp(text)) == expected, text


def test_loss_falls(trained):
    losses = trained.epoch_losses
    assert len(losses) == EPOCHS
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[0] > losses[-1]
    assert losses[-1] < 0.5 * losses[0]


def test_get_loss_on_untrained_batch(tiny_bert):
    nlp = build_nlp(tiny_bert)
    examples = make_examples(nlp, 4, 2)
    nlp.initialize(lambda: examples)
    ner = nlp.get_pipe("bert_ner")
    docs = list(nlp.get_pipe("transformer").pipe([eg.predicted for eg in examples]))
    scores = ner.predict(docs)
    n_tags = len(ner.tags)
    # The output layer starts random (normal, std 0.02, as BERT's), not zero: the tags are not
    # all equally likely, so the encoder gets a gradient from the first step.
    for doc, doc_scores in zip(docs, scores):
        assert doc_scores.shape == (len(doc), n_tags)
        numpy.testing.assert_allclose(doc_scores.sum(axis=1), 1.0, rtol=1e-5)
        assert not numpy.allclose(doc_scores, 1.0 / n_tags, rtol=1e-3)
    loss, d_scores = ner.get_loss(examples, scores)
    assert type(loss) is float
    gold = numpy.asarray(ner._gold_tag_ids(examples))
    probs = numpy.concatenate(scores)
    expected = -numpy.log(probs[numpy.arange(len(gold)), gold]).sum()
    assert loss == pytest.approx(float(expected), rel=1e-5)
    assert [d.shape for d in d_scores] == [s.shape for s in scores]
    # Softmax + cross-entropy gradient: probs - one_hot(gold).
    one_hot = numpy.eye(n_tags, dtype="float32")[gold]
    numpy.testing.assert_allclose(numpy.concatenate(d_scores), probs - one_hot, atol=1e-6)


def test_loss_is_torch_cross_entropy(tiny_bert):
    """The loss and its gradient with respect to the softmax's input are those of torch's
    cross_entropy over the annotated tokens (the reference computation); tokens without
    annotation carry none. The loss is a sum over tokens, and very small probabilities are
    floored (`decoding.MIN_PROB`) rather than giving an infinite loss."""
    import torch

    from spacy_bert_ner.decoding import MIN_PROB

    nlp = build_nlp(tiny_bert)
    examples = make_examples(nlp, 4, 2)
    nlp.initialize(lambda: examples)
    ner = nlp.get_pipe("bert_ner")
    docs = list(nlp.get_pipe("transformer").pipe([eg.predicted for eg in examples]))
    scores = ner.predict(docs)
    gold = numpy.asarray(ner._gold_tag_ids(examples))
    gold[::5] = -1  # some tokens without annotation
    ner._gold_tag_ids = lambda _examples: gold
    loss, d_scores = ner.get_loss(examples, scores)
    logits = torch.tensor(numpy.log(numpy.concatenate(scores)), requires_grad=True)
    annotated = torch.tensor(gold >= 0)
    expected = torch.nn.functional.cross_entropy(
        logits[annotated], torch.tensor(gold[gold >= 0], dtype=torch.long), reduction="sum"
    )
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    numpy.testing.assert_allclose(numpy.concatenate(d_scores), logits.grad.numpy(), atol=1e-6)
    # A gold tag given probability 0 costs -log(MIN_PROB), not infinity.
    zero = [s.copy() for s in scores]
    row = int(numpy.flatnonzero(gold >= 0)[0])
    zero[0][row] = 0.0
    zero[0][row, (gold[row] + 1) % zero[0].shape[1]] = 1.0
    floored, _ = ner.get_loss(examples, zero)
    others = expected.item() + torch.log_softmax(logits.detach(), dim=1)[row, gold[row]].item()
    assert floored == pytest.approx(others - math.log(MIN_PROB), rel=1e-5)


def test_nan_loss_is_an_error(tiny_bert):
    nlp = build_nlp(tiny_bert)
    examples = make_examples(nlp, 2, 2)
    nlp.initialize(lambda: examples)
    ner = nlp.get_pipe("bert_ner")
    docs = list(nlp.get_pipe("transformer").pipe([eg.predicted for eg in examples]))
    scores = [numpy.full_like(s, numpy.nan) for s in ner.predict(docs)]
    with pytest.raises(ValueError, match="NaN loss in 'bert_ner': lower the learning rate"):
        ner.get_loss(examples, scores)


def test_get_loss_ignores_missing_annotation(tiny_bert):
    nlp = build_nlp(tiny_bert)
    nlp.initialize(lambda: make_examples(nlp, 4, 2))
    ner = nlp.get_pipe("bert_ner")
    reference = Doc(nlp.vocab, words=["john", "smith", "said", "hello"])  # no NER annotation
    example = Example(nlp.make_doc("john smith said hello"), reference)
    docs = list(nlp.get_pipe("transformer").pipe([example.predicted]))
    loss, d_scores = ner.get_loss([example], ner.predict(docs))
    assert loss == 0.0
    assert not d_scores[0].any()


# --- annotations -----------------------------------------------------------------------------


def test_span_group_matches_ents_with_scores(trained):
    n_entities = 0
    for doc in trained.nlp.pipe(TEXTS):
        group = doc.spans["bert_ner"]
        assert [(s.start, s.end, s.label_) for s in group] == [
            (e.start, e.end, e.label_) for e in doc.ents
        ]
        scores = group.attrs["scores"]
        assert len(scores) == len(group)
        assert all(isinstance(score, float) and 0.0 <= score <= 1.0 for score in scores)
        n_entities += len(group)
    assert n_entities == sum(len(expected) for expected in EXPECTED.values())


def test_entity_scores_are_mean_tag_probabilities(trained):
    nlp = trained.nlp
    ner = nlp.get_pipe("bert_ner")
    doc = nlp(TEXTS[0])
    probs = ner.predict([doc])[0]
    tags, scheme = ner.tags, ner.cfg["scheme"]
    for span, score in zip(doc.spans["bert_ner"], doc.spans["bert_ner"].attrs["scores"]):
        gold = offsets_to_biluo_tags(doc, [(span.start_char, span.end_char, span.label_)])
        expected = [
            probs[i, tags.index(biluo_to_scheme(gold[i], scheme))]
            for i in range(span.start, span.end)
        ]
        assert score == pytest.approx(float(numpy.mean(expected)), abs=1e-6)


def test_to_disk_and_load_round_trip(trained, saved):
    loaded = spacy.load(saved)
    assert loaded.pipe_names == ["transformer", "bert_ner"]
    original_ner = trained.nlp.get_pipe("bert_ner")
    loaded_ner = loaded.get_pipe("bert_ner")
    assert loaded_ner.labels == original_ner.labels
    assert loaded_ner.cfg == original_ner.cfg
    for text in TEXTS:
        expected, actual = trained.nlp(text), loaded(text)
        assert ent_offsets(actual) == ent_offsets(expected)
        assert actual.spans["bert_ner"].attrs["scores"] == pytest.approx(
            expected.spans["bert_ner"].attrs["scores"], abs=1e-6
        )


def test_to_bytes_round_trip(trained, tiny_bert):
    fresh = build_nlp(tiny_bert)
    fresh.from_bytes(trained.nlp.to_bytes())
    for text in TEXTS[:2]:
        assert ent_offsets(fresh(text)) == ent_offsets(trained.nlp(text))


def test_overwrite_ents(saved):
    nlp = spacy.load(saved)
    ruler = nlp.add_pipe("entity_ruler", before="bert_ner")
    ruler.add_patterns([{"label": "PRODUCT", "pattern": "corp"}])
    ner = nlp.get_pipe("bert_ner")
    text = TEXTS[0]

    assert ner.overwrite_ents is True
    assert ents(nlp(text)) == [("john smith", "PER"), ("acme corp", "ORG"), ("paris", "LOC")]

    ner.overwrite_ents = False
    doc = nlp(text)
    # The ruler's entity stays; predictions that overlap it are dropped, the others are added.
    assert ents(doc) == [("john smith", "PER"), ("corp", "PRODUCT"), ("paris", "LOC")]
    # The span group still holds every prediction.
    assert [(s.text, s.label_) for s in doc.spans["bert_ner"]] == EXPECTED[text]
    # Tokens outside every entity are still annotated as outside.
    assert [t.ent_iob_ for t in doc] == ["B", "I", "O", "O", "O", "B", "O", "B", "O"]


def test_load_time_config_overrides_apply(saved):
    overrides = {
        "components": {
            "bert_ner": {"overwrite_ents": False, "decoder": "greedy", "outside_bias": 1.5}
        }
    }
    nlp = spacy.load(saved, config=overrides)
    assert nlp.config["components"]["bert_ner"]["overwrite_ents"] is False
    ner = nlp.get_pipe("bert_ner")
    assert ner.decoder == "greedy"
    assert ner.outside_bias == 1.5
    assert ner.overwrite_ents is False
    assert ner.cfg["scheme"] == "BILUO"  # describes the trained model: kept from disk


def test_load_time_scheme_change_is_an_error(saved):
    # The output layer predicts the trained scheme's tags; a different scheme cannot apply.
    with pytest.raises(
        ValueError,
        match="asks for scheme 'BIO', but the model being loaded was trained with 'BILUO'",
    ):
        spacy.load(saved, config={"components": {"bert_ner": {"scheme": "BIO"}}})
    nlp = spacy.load(saved, config={"components": {"bert_ner": {"scheme": "BILUO"}}})
    assert nlp.get_pipe("bert_ner").cfg["scheme"] == "BILUO"
    assert nlp.config["components"]["bert_ner"]["scheme"] == "BILUO"


def test_source_into_existing_pipeline(trained, saved, tmp_path):
    donor = spacy.load(saved)
    donor.replace_listeners("transformer", "bert_ner", ["model.tok2vec"])
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler")  # stands in for the pipeline's own ner
    ruler.add_patterns([{"label": "THING", "pattern": "weather"}])
    nlp.add_pipe("bert_ner", source=donor)
    assert nlp.pipe_names == ["sentencizer", "entity_ruler", "bert_ner"]
    assert nlp.get_pipe("bert_ner").labels == ("LOC", "ORG", "PER")
    for text in TEXTS:
        doc = nlp(text)
        assert ent_offsets(doc) == ent_offsets(trained.nlp(text)), text
        assert doc.has_annotation("SENT_START")

    nlp.to_disk(tmp_path / "combined")
    reloaded = spacy.load(tmp_path / "combined")
    assert reloaded.pipe_names == ["sentencizer", "entity_ruler", "bert_ner"]
    for text in TEXTS:
        expected, actual = trained.nlp(text), reloaded(text)
        assert ent_offsets(actual) == ent_offsets(expected), text
        assert actual.spans["bert_ner"].attrs["scores"] == pytest.approx(
            expected.spans["bert_ner"].attrs["scores"], abs=1e-6
        )


def test_long_document_entities_at_the_end(trained):
    get_spans = trained.nlp.config["components"]["transformer"]["model"]["get_spans"]
    assert get_spans["@span_getters"] == "spacy-transformers.strided_spans.v1"
    filler = "the weather was fine and nothing happened . " * 300
    doc = trained.nlp(filler + TEXTS[0])
    assert len(doc) > 2000
    n = len(doc)
    assert ent_offsets(doc)[-3:] == [
        ("john smith", "PER", n - 9, n - 7),
        ("acme corp", "ORG", n - 5, n - 3),
        ("paris", "LOC", n - 2, n - 1),
    ]


def test_robust_to_odd_input(trained):
    nlp = trained.nlp
    # No word pieces at all (empty, whitespace, control characters): nothing to predict from.
    for text in ["", "   \n ", "\x00\x07\t"]:
        doc = nlp(text)
        assert doc.text == text
        assert ents(doc) == [], repr(text)
        assert list(doc.spans["bert_ner"]) == []
        assert doc.spans["bert_ner"].attrs["scores"] == []
    assert len(nlp("")) == 0
    # Emoji become [UNK] word pieces: any prediction is fine, as long as it is well formed.
    doc = nlp("👍🏽 🎉")
    assert [t.text for t in doc] == ["👍", "🏽", "🎉"]
    scores = doc.spans["bert_ner"].attrs["scores"]
    assert len(scores) == len(doc.ents) and all(0.0 <= s <= 1.0 for s in scores)

    batch = ["", TEXTS[0], "", "   ", TEXTS[1], "\x00", "", TEXTS[4]]
    docs = list(nlp.pipe(batch, batch_size=3))
    assert [doc.text for doc in docs] == batch
    for text, doc in zip(batch, docs):
        if not text.strip() or text == "\x00":
            assert ents(doc) == [], repr(text)
        else:
            assert ents(doc) == EXPECTED[text]
            assert ent_offsets(doc) == ent_offsets(nlp(text))

    all_empty = list(nlp.pipe(["", "", ""]))
    assert all(len(doc) == 0 and not doc.ents for doc in all_empty)


# --- bad input -------------------------------------------------------------------------------


def test_initialize_without_entities_fails(tiny_bert):
    nlp = build_nlp(tiny_bert)
    examples = []
    for words in (["nothing", "happened", "."], ["the", "weather", "was", "fine"]):
        reference = Doc(nlp.vocab, words=words)
        reference.ents = []
        examples.append(Example(nlp.make_doc(reference.text), reference))
    with pytest.raises(ValueError, match="No entity labels"):
        nlp.initialize(lambda: examples)


def test_unknown_scheme_fails():
    with pytest.raises(ValueError) as excinfo:
        spacy.blank("en").add_pipe("bert_ner", config={"scheme": "XYZ"})
    assert "'XYZ'" in str(excinfo.value)
    assert "'BIO'" in str(excinfo.value) and "'BILUO'" in str(excinfo.value)


def test_unknown_decoder_fails():
    with pytest.raises(ValueError) as excinfo:
        spacy.blank("en").add_pipe("bert_ner", config={"decoder": "foo"})
    assert "'foo'" in str(excinfo.value)
    assert "'viterbi'" in str(excinfo.value) and "'greedy'" in str(excinfo.value)


@pytest.mark.parametrize("label", ["", " PER", "PER\n", 5])
def test_add_invalid_label_fails(label):
    ner = spacy.blank("en").add_pipe("bert_ner")
    with pytest.raises(ValueError, match="Invalid entity label"):
        ner.add_label(label)
    assert ner.labels == ()


def test_add_label_before_and_after_initialize(saved):
    ner = spacy.blank("en").add_pipe("bert_ner")
    assert ner.add_label("PER") == 1
    assert ner.add_label("PER") == 0
    assert ner.add_label("creative-work") == 1  # WNUT-17 labels contain hyphens
    assert ner.labels == ("PER", "creative-work")
    assert ner.tags == [
        "O",
        *("B-PER", "I-PER", "L-PER", "U-PER"),
        *("B-creative-work", "I-creative-work", "L-creative-work", "U-creative-work"),
    ]

    loaded = spacy.load(saved).get_pipe("bert_ner")
    assert loaded.add_label("PER") == 0  # already there: fine
    with pytest.raises(ValueError, match="already initialized"):
        loaded.add_label("MISC")
    assert loaded.labels == ("LOC", "ORG", "PER")


def test_misaligned_gold_entity_warns(saved):
    nlp = spacy.load(saved)
    predicted = nlp.make_doc("newyork is big")
    reference = Doc(
        nlp.vocab, words=["new", "york", "is", "big"], spaces=[False, True, True, False]
    )
    reference.ents = [Span(reference, 0, 1, label="LOC")]
    example = Example(predicted, reference)
    assert [t.text for t in predicted] == ["newyork", "is", "big"]
    aligned, _ = example.get_aligned_ents_and_ner()
    assert len(aligned) < len(reference.ents)  # precondition: the entity cannot align

    aligned_example = make_examples(nlp, 1, 3)[0]
    losses: Dict[str, float] = {}
    with pytest.warns(UserWarning, match="do not align"):
        nlp.update([example, aligned_example], losses=losses)
    assert math.isfinite(losses["bert_ner"])
    assert losses["bert_ner"] > 0.0  # the aligned tokens still carry a loss


def test_aligned_gold_does_not_warn(saved):
    nlp = spacy.load(saved)
    losses: Dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*do not align.*")
        nlp.update(make_examples(nlp, 4, 5), losses=losses)
    assert math.isfinite(losses["bert_ner"])


# --- configuration ---------------------------------------------------------------------------


def test_labels_from_initialize_config(tiny_bert):
    nlp = build_nlp(tiny_bert, init_labels=["PER"])
    examples = make_examples(nlp, 8, 0)  # has ORG and LOC too
    unknown = Counter(e.label_ for eg in examples for e in eg.reference.ents if e.label_ != "PER")
    assert set(unknown) == {"ORG", "LOC"}  # precondition
    listed = ", ".join(f"{label} \\({n}\\)" for label, n in sorted(unknown.items()))
    # Entities outside the label set are trained as O: said once, with their counts.
    with pytest.warns(UserWarning, match=f"other labels: {listed}. They are trained as outside"):
        nlp.initialize(lambda: examples)
    ner = nlp.get_pipe("bert_ner")
    assert ner.labels == ("PER",)
    assert ner.tags == ["O", "B-PER", "I-PER", "L-PER", "U-PER"]
    assert ner.model.get_ref("output_layer").get_dim("nO") == 5
    losses: Dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*trained as outside.*")
        nlp.update(examples, losses=losses)  # ORG/LOC count as outside, already reported
    misc = Doc(nlp.vocab, words=["ibm", "won"])
    misc.ents = [Span(misc, 0, 1, label="MISC")]
    with pytest.warns(UserWarning, match=r"in this batch have other labels: MISC \(1\)"):
        nlp.update([Example(nlp.make_doc("ibm won"), misc)])
    assert math.isfinite(losses["bert_ner"]) and losses["bert_ner"] > 0
    assert all(ent.label_ == "PER" for doc in nlp.pipe(TEXTS) for ent in doc.ents)


def test_labels_given_to_pipe_initialize(tiny_bert):
    nlp = build_nlp(tiny_bert)
    examples = make_examples(nlp, 8, 0)
    nlp.get_pipe("transformer").initialize(lambda: examples, nlp=nlp)
    ner = nlp.get_pipe("bert_ner")
    assert isinstance(ner, BertNER)
    with pytest.warns(UserWarning, match=r"other labels: LOC \(\d+\)"):
        ner.initialize(lambda: examples, nlp=nlp, labels=["ORG", "PER"])
    assert ner.labels == ("ORG", "PER")
    assert ner.label_data == ("ORG", "PER")
    assert ner.tags == [
        "O",
        *("B-ORG", "I-ORG", "L-ORG", "U-ORG"),
        *("B-PER", "I-PER", "L-PER", "U-PER"),
    ]


def test_bio_scheme_learns(tiny_bert):
    nlp = build_nlp(tiny_bert, overrides={"components.bert_ner.scheme": "BIO"})
    losses = train(nlp, EPOCHS)
    ner = nlp.get_pipe("bert_ner")
    assert ner.cfg["scheme"] == "BIO"
    assert ner.tags[:5] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    assert ner.model.get_ref("output_layer").get_dim("nO") == 7
    assert losses[0] > losses[-1]
    assert dev_f1(nlp)["ents_f"] >= 0.9
    assert ents(nlp(TEXTS[0])) == EXPECTED[TEXTS[0]]


def test_greedy_decoder_configured(tiny_bert):
    nlp = build_nlp(
        tiny_bert,
        overrides={"components.bert_ner.decoder": "greedy", "components.bert_ner.scheme": "BIO"},
        init_labels=["PER"],
    )
    nlp.initialize(lambda: make_examples(nlp, 4, 0))
    ner = nlp.get_pipe("bert_ner")
    assert ner.decoder == "greedy"
    # O narrowly beats B-PER, then I-PER: greedy keeps the stray I- (one-token entity);
    # viterbi would have produced "john smith".
    probs = numpy.array([[0.50, 0.45, 0.05], [0.05, 0.05, 0.90]], dtype="float32")
    doc = nlp.make_doc("john smith")
    ner.set_annotations([doc], [probs])
    assert ent_offsets(doc) == [("smith", "PER", 1, 2)]
    ner.decoder = "viterbi"
    doc = nlp.make_doc("john smith")
    ner.set_annotations([doc], [probs])
    assert ent_offsets(doc) == [("john smith", "PER", 0, 2)]


def test_any_spacy_tok2vec_works():
    fix_random_seed(0)
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("bert_ner", config={"model": HASH_EMBED_MODEL, "decoder": "viterbi"})
    tok2vec_config = nlp.config["components"]["bert_ner"]["model"]["tok2vec"]
    assert tok2vec_config["@architectures"] == "spacy.HashEmbedCNN.v2"
    assert "upstream" not in tok2vec_config  # not merged with the listener defaults
    assert nlp.pipe_names == ["bert_ner"]
    losses = train(nlp, 8)
    assert losses[0] > losses[-1]
    scores = dev_f1(nlp)
    assert scores["ents_f"] >= 0.9
    assert ner.labels == ("LOC", "ORG", "PER")


# --- casing features -------------------------------------------------------------------------


def tag_probs(nlp: Language, text: str) -> numpy.ndarray:
    pipe = nlp.get_pipe("bert_ner")
    doc = nlp.get_pipe("transformer")(nlp.make_doc(text))
    return numpy.asarray(pipe.model.predict([doc])[0])


def test_casing_features_see_capitalisation(trained, tiny_bert):
    """The tiny BERT lowercases its input, like the embedded MiniLM: only the casing features can
    tell "Paris" from "paris"."""
    model = trained.nlp.get_pipe("bert_ner").model
    assert model.get_ref("features").name == "casing_features"
    lower = tag_probs(trained.nlp, "john smith visited paris .")
    upper = tag_probs(trained.nlp, "John Smith visited Paris .")
    assert not numpy.allclose(lower, upper)

    fix_random_seed(0)
    nlp = build_nlp(tiny_bert, overrides={"components.bert_ner.model.features": None})
    nlp.initialize(lambda: make_examples(nlp, 10, 0))
    assert not nlp.get_pipe("bert_ner").model.has_ref("features")
    lower = tag_probs(nlp, "john smith visited paris .")
    upper = tag_probs(nlp, "John Smith visited Paris .")
    numpy.testing.assert_allclose(lower, upper, rtol=1e-5, atol=1e-6)


def test_casing_window_sees_the_neighbours(trained, tiny_bert):
    """With the default window encoder over the casing features, a token's tag probabilities depend
    on its neighbours' capitalisation; with the hash embeddings alone, only on its own."""
    text, neighbour_capitalised = "john smith visited paris .", "john smith visited Paris ."
    visited = 2
    lower = tag_probs(trained.nlp, text)[visited]
    upper = tag_probs(trained.nlp, neighbour_capitalised)[visited]
    assert not numpy.allclose(lower, upper)

    fix_random_seed(0)
    embed_only = {
        "components.bert_ner.model.features": {
            "@architectures": "spacy.MultiHashEmbed.v2",
            "width": 32,
            "attrs": ["SHAPE", "PREFIX", "SUFFIX"],
            "rows": [1000, 2500, 2500],
            "include_static_vectors": False,
        }
    }
    nlp = build_nlp(tiny_bert, overrides=embed_only)
    nlp.initialize(lambda: make_examples(nlp, 10, 0))
    lower = tag_probs(nlp, text)[visited]
    upper = tag_probs(nlp, neighbour_capitalised)[visited]
    numpy.testing.assert_allclose(lower, upper, rtol=1e-5, atol=1e-6)


def settings(block: Any) -> List[str]:
    """The dotted names of every setting (not section) in a config block."""
    if not isinstance(block, dict):
        return []
    found = []
    for key, value in block.items():
        if isinstance(value, dict):
            found += [f"{key}.{name}" for name in settings(value)]
        else:
            found.append(key)
    return found


def test_project_config_takes_its_model_from_the_factory(tiny_bert):
    """The model is written once, in the factory's DEFAULT_MODEL_CONFIG: configs/bert_ner.cfg only
    names its blocks, and filling it (as `spacy train` does) gives the factory's model and scorer,
    so the pipeline the project trains is the one `nlp.add_pipe("bert_ner")` makes."""
    project = load_config(CONFIG_PATH)["components"]["bert_ner"]
    assert settings(project["model"]) == []
    assert "scorer" not in project
    filled = build_nlp(tiny_bert).config["components"]["bert_ner"]
    assert filled["model"] == DEFAULT_MODEL
    assert filled["scorer"] == {"@scorers": "spacy_bert_ner.ner_scorer.v1"}
    # The settings the config lists for the reader are the factory's defaults.
    defaults = Language.get_factory_meta("bert_ner").default_config
    listed = {key: value for key, value in project.items() if key not in ("factory", "model")}
    assert listed and listed == {key: defaults[key] for key in listed}


def test_project_config_model_settings_can_be_overridden(tiny_bert):
    """The empty blocks in configs/bert_ner.cfg let any model setting be overridden (spaCy accepts
    overrides only inside sections the config has); the rest is still filled from the factory."""
    nlp = build_nlp(
        tiny_bert,
        overrides={
            "components.bert_ner.model.hidden_width": 16,
            "components.bert_ner.model.tok2vec.pooling.@layers": "reduce_first.v1",
            "components.bert_ner.model.features.width": 48,
        },
    )
    model = nlp.config["components"]["bert_ner"]["model"]
    assert model["hidden_width"] == 16
    assert model["tok2vec"]["pooling"] == {"@layers": "reduce_first.v1"}
    assert model["features"] == {**DEFAULT_MODEL["features"], "width": 48}
    assert model["tok2vec"]["@architectures"] == DEFAULT_MODEL["tok2vec"]["@architectures"]
    layers = [node.name for node in nlp.get_pipe("bert_ner").model.walk()]
    assert "relu" in layers  # the hidden layer was built


def test_settings_set_on_the_object_warn_on_save(pipeline_path: Path, tmp_path: Path) -> None:
    """Run-time settings come from the config each time a pipeline is loaded: one changed on the
    object (`ner.outside_bias = 5.0`) is not saved, and saving says so, with the config override
    that saves it, which is kept."""
    nlp = spacy.load(pipeline_path)
    ner = nlp.get_pipe("bert_ner")
    ner.overwrite_ents, ner.outside_bias = False, 5.0
    with pytest.warns(UserWarning, match=r"outside_bias = 5\.0, overwrite_ents = False.*not saved"):
        nlp.to_disk(tmp_path / "changed")
    with pytest.warns(UserWarning, match="not saved"):
        ner.to_bytes()
    loaded = spacy.load(tmp_path / "changed").get_pipe("bert_ner")
    assert (loaded.overwrite_ents, loaded.outside_bias) == (True, 0.0)
    config = {"components": {"bert_ner": {"overwrite_ents": False, "outside_bias": 5.0}}}
    nlp = spacy.load(pipeline_path, config=config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nlp.to_disk(tmp_path / "configured")
    loaded = spacy.load(tmp_path / "configured").get_pipe("bert_ner")
    assert (loaded.overwrite_ents, loaded.outside_bias) == (False, 5.0)
