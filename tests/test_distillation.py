"""Distillation: teacher probabilities stored on training docs, carried through context_mix, and
trained on through `teacher_weight`."""

import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from synthetic import make_doc, make_examples
from thinc.api import fix_random_seed
from typer.testing import CliRunner
from util import build_nlp, train

from spacy_bert_ner.augmenters import create_context_mix
from spacy_bert_ner.cli import app
from spacy_bert_ner.distillation import TEACHER_KEY, DistillError, add_teacher_targets, teacher_rows
from spacy_bert_ner.loss import mixed_targets, soft_target_loss


def soft_rows(rng: numpy.random.Generator, n: int, n_tags: int) -> numpy.ndarray:
    rows = rng.random((n, n_tags)).astype("float32") ** 4
    return rows / rows.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def scored(tiny_bert):
    """An initialized pipeline, a batch of examples and the component's scores for them."""
    fix_random_seed(0)
    nlp = build_nlp(tiny_bert)
    examples = make_examples(nlp, 4, 2)
    nlp.initialize(lambda: examples)
    ner = nlp.get_pipe("bert_ner")
    docs = list(nlp.get_pipe("transformer").pipe([eg.predicted for eg in examples]))
    return nlp, ner, examples, ner.predict(docs)


@pytest.mark.parametrize("weight", [0.5, 0.3, 1.0])
def test_teacher_loss_is_cross_entropy_against_the_mixed_target(scored, weight):
    """With teacher probabilities on some tokens, the loss and gradient are torch's
    cross-entropy against (1 - w) * gold + w * teacher there, the gold tag elsewhere, w * teacher
    where the gold tag is missing, and nothing where neither is known."""
    import torch

    nlp, ner, examples, scores = scored
    n_tags = len(ner.tags)
    rng = numpy.random.default_rng(0)
    gold = numpy.asarray(ner._gold_tag_ids(examples)).copy()
    gold[::5] = -1
    teacher = soft_rows(rng, len(gold), n_tags)
    teacher[::3] = numpy.nan  # tokens without teacher probabilities
    loss, d_probs = soft_target_loss(
        numpy.concatenate(scores), mixed_targets(gold, teacher, weight)
    )
    target = numpy.zeros((len(gold), n_tags), dtype="float32")
    for i, tag in enumerate(gold):
        if tag >= 0:
            target[i, tag] = 1.0
        if not numpy.isnan(teacher[i, 0]):
            target[i] = (1 - weight) * target[i] + weight * teacher[i]
    logits = torch.tensor(numpy.log(numpy.concatenate(scores)), requires_grad=True)
    expected = -(torch.tensor(target) * torch.log_softmax(logits, dim=1)).sum()
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    numpy.testing.assert_allclose(d_probs, logits.grad.numpy(), atol=1e-6)


def test_without_teacher_rows_the_target_loss_is_the_gold_loss(scored):
    nlp, ner, examples, scores = scored
    gold = ner._gold_tag_ids(examples)
    no_teacher = numpy.full((len(gold), len(ner.tags)), numpy.nan, dtype="float32")
    loss, d_probs = soft_target_loss(
        numpy.concatenate(scores), mixed_targets(gold, no_teacher, 0.5)
    )
    plain_loss, plain_d = ner.get_loss(examples, scores)
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    numpy.testing.assert_allclose(d_probs, numpy.concatenate(plain_d), atol=1e-7)


def test_get_loss_reads_the_targets_from_the_reference_docs(scored):
    """get_loss takes each reference doc's stored rows (mapped to its predicted tokens) only when
    teacher_weight is above 0."""
    nlp, ner, examples, scores = scored
    rng = numpy.random.default_rng(1)
    taught = []
    for eg in examples:
        reference = eg.reference.copy()
        probs = soft_rows(rng, len(reference), len(ner.tags))
        reference.user_data[TEACHER_KEY] = {"tags": ner.tags, "probs": probs}
        taught.append(Example(eg.predicted, reference))
    teacher = numpy.concatenate([eg.reference.user_data[TEACHER_KEY]["probs"] for eg in taught])
    gold = ner._gold_tag_ids(examples)
    assert ner.get_loss(taught, scores)[0] == pytest.approx(ner.get_loss(examples, scores)[0])
    ner.teacher_weight = 0.5
    try:
        loss, _ = ner.get_loss(taught, scores)
        expected, _ = soft_target_loss(numpy.concatenate(scores), mixed_targets(gold, teacher, 0.5))
    finally:
        ner.teacher_weight = 0.0
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss != pytest.approx(ner.get_loss(examples, scores)[0], rel=1e-3)


def test_teacher_rows_follow_the_predicted_tokens():
    nlp = spacy.blank("en")
    reference = Doc(nlp.vocab, words=["New", "York-based", "firm", "."], spaces=[1, 1, 0, 0])
    probs = numpy.arange(8, dtype="float32").reshape(4, 2)
    reference.user_data[TEACHER_KEY] = {"tags": ["O", "U-LOC"], "probs": probs}
    same = Doc(nlp.vocab, words=["New", "York-based", "firm", "."], spaces=[1, 1, 0, 0])
    numpy.testing.assert_array_equal(teacher_rows(same, reference, ["O", "U-LOC"], "ner"), probs)
    split = Doc(
        nlp.vocab, words=["New", "York", "-", "based", "firm", "."], spaces=[1, 0, 0, 1, 0, 0]
    )
    rows = teacher_rows(split, reference, ["O", "U-LOC"], "ner")
    numpy.testing.assert_array_equal(rows[[0, 4, 5]], probs[[0, 2, 3]])
    assert numpy.isnan(rows[1:4]).all()
    with pytest.raises(DistillError, match="tags"):
        teacher_rows(same, reference, ["O", "U-PER"], "ner")
    reference.user_data[TEACHER_KEY]["probs"] = probs[:3]
    with pytest.raises(DistillError, match="4 tokens but teacher targets for 3"):
        teacher_rows(same, reference, ["O", "U-LOC"], "ner")
    assert teacher_rows(same, same, ["O", "U-LOC"], "ner") is None


def test_context_mix_pieces_keep_their_rows_of_the_targets():
    doc = make_doc(23)
    probs = numpy.arange(len(doc) * 2, dtype="float16").reshape(len(doc), 2)
    doc.user_data[TEACHER_KEY] = {"tags": ["O", "U-PER"], "probs": probs}
    nlp = spacy.blank("en")
    augment = create_context_mix(whole_fraction=0.0, max_sents=4)
    pieces = list(augment(nlp, Example(nlp.make_doc(doc.text), doc)))
    assert len(pieces) > 5
    joined = numpy.concatenate([eg.reference.user_data[TEACHER_KEY]["probs"] for eg in pieces])
    numpy.testing.assert_array_equal(joined, probs)
    for eg in pieces:
        assert len(eg.reference.user_data[TEACHER_KEY]["probs"]) == len(eg.reference)


def test_add_teacher_targets_is_the_teachers_mean_prediction(pipeline_path):
    teacher = spacy.load(pipeline_path)
    ner = teacher.get_pipe("bert_ner")
    texts = ["john smith works for acme corp in paris .", "mary jones said google will grow ."]
    docs = [teacher.make_doc(text) for text in texts]
    done = []
    tags = add_teacher_targets(docs, [teacher, teacher], progress=done.append)
    assert tags == ner.tags
    assert sum(done) == 2 * len(docs)
    expected = ner.predict(list(teacher.get_pipe("transformer").pipe(docs)))
    for doc, doc_expected in zip(docs, expected):
        stored = doc.user_data[TEACHER_KEY]
        assert stored["tags"] == ner.tags and stored["probs"].dtype == numpy.float16
        numpy.testing.assert_allclose(stored["probs"], doc_expected, atol=1e-3)
        assert not doc.ents  # the docs' own annotation is untouched


def test_teachers_must_predict_the_same_tags(pipeline_path):
    teacher = spacy.load(pipeline_path)
    other = spacy.load(pipeline_path)
    other.get_pipe("bert_ner").cfg["labels"] = ["LOC", "PER"]
    with pytest.raises(DistillError, match="teacher 2 predicts the tags"):
        add_teacher_targets([teacher.make_doc("paris .")], [teacher, other])
    with pytest.raises(DistillError, match="no 'bert_ner' component"):
        add_teacher_targets([teacher.make_doc("paris .")], [spacy.blank("en")])


def test_distill_command_and_training_on_its_output(pipeline_path, tiny_bert, tmp_path):
    """`distill` writes a DocBin whose docs keep their entities and carry the targets; a student
    trained with teacher_weight = 0.5 on it learns the synthetic entities."""
    fix_random_seed(0)
    student = build_nlp(tiny_bert, overrides={"components.bert_ner.teacher_weight": 0.5})
    examples = make_examples(student, 60, 0)
    DocBin(docs=[eg.reference for eg in examples]).to_disk(tmp_path / "train.spacy")
    result = CliRunner().invoke(
        app,
        ["distill", str(tmp_path / "train.spacy"), str(tmp_path / "out.spacy"), str(pipeline_path)],
    )
    assert result.exit_code == 0, result.output
    docs = list(DocBin().from_disk(tmp_path / "out.spacy").get_docs(student.vocab))
    spans = [[(e.start, e.end, e.label_) for e in d.ents] for d in docs]
    assert spans == [[(e.start, e.end, e.label_) for e in eg.reference.ents] for eg in examples]
    assert all(len(d.user_data[TEACHER_KEY]["probs"]) == len(d) for d in docs)
    taught = [Example(student.make_doc(d.text), d) for d in docs]
    losses = train(student, 12, examples=taught)
    assert losses[-1] < 0.5 * losses[0]
    assert student.evaluate(make_examples(student, 30, 1))["ents_f"] >= 0.9


def test_teacher_weight_without_targets_is_an_error(tiny_bert):
    nlp = build_nlp(tiny_bert, overrides={"components.bert_ner.teacher_weight": 0.5})
    examples = make_examples(nlp, 4, 0)
    with pytest.raises(ValueError, match="carry no teacher probabilities"):
        nlp.initialize(lambda: examples)


def test_teacher_weight_out_of_range_is_an_error(tiny_bert):
    nlp = build_nlp(tiny_bert)
    with pytest.raises(ValueError, match=r"teacher_weight must be in \[0, 1\], got 1.5"):
        nlp.add_pipe("bert_ner", name="other", config={"teacher_weight": 1.5})


def test_distill_command_reports_a_file_that_is_not_a_docbin(pipeline_path, tmp_path):
    bad = tmp_path / "train.spacy"
    bad.write_text("not a docbin")
    result = CliRunner().invoke(
        app, ["distill", str(bad), str(tmp_path / "o.spacy"), str(pipeline_path)]
    )
    assert result.exit_code == 1
    assert f"{bad}: not a spaCy DocBin" in result.output
