"""The transformer model: its output split by doc as spacy-transformers splits it."""

from pathlib import Path

import numpy
import pytest
import spacy
from spacy_transformers.data_classes import FullTransformerBatch

from spacy_bert_ner.transformer_model import FastTransformerModel, split_by_doc

TEXT = "john smith works for acme corp in paris ."


def test_split_by_doc_equals_spacy_transformers(pipeline_path: Path) -> None:
    """The same per-doc word pieces, alignment and hidden states as spacy-transformers'
    `FullTransformerBatch.split_by_doc`, for a batch with an empty doc, whitespace and control
    characters, a long doc (several overlapping windows) and the same doc twice; and the model's
    output arrives split (its `doc_data` is ours), in training and in prediction."""
    nlp = spacy.load(pipeline_path)
    model = nlp.get_pipe("transformer").model
    assert isinstance(model, FastTransformerModel)
    texts = [TEXT, "", "acme  corp \n paris", "john \x07 smith", " ".join([TEXT] * 40), "paris"]
    docs = [nlp.make_doc(text) for text in texts]
    docs.append(docs[0])
    for is_train in (True, False):
        batch, _ = model._func(model, docs, is_train)
        assert batch.cached_doc_data is not None
        ours = batch.cached_doc_data
        theirs = FullTransformerBatch(
            spans=batch.spans,
            wordpieces=batch.wordpieces,
            model_output=batch.model_output,
            align=batch.align,
        ).split_by_doc()
        assert len(ours) == len(theirs) == len(docs)
        assert len(ours[4].wordpieces.input_ids) > 1  # several windows
        assert not ours[1].model_output  # the empty doc
        for a, b in zip(ours, theirs):
            numpy.testing.assert_array_equal(a.align.dataXd, b.align.dataXd)
            numpy.testing.assert_array_equal(a.align.lengths, b.align.lengths)
            numpy.testing.assert_array_equal(a.wordpieces.input_ids, b.wordpieces.input_ids)
            assert a.model_output.keys() == b.model_output.keys()
            for key in a.model_output:
                numpy.testing.assert_array_equal(a.model_output[key], b.model_output[key])
        assert split_by_doc(batch)[6].align.dataXd.tolist() == ours[6].align.dataXd.tolist()
    # The whole component: each doc's trf_data as the per-doc split gives it.
    annotated = list(nlp.pipe(texts))
    assert annotated[4]._.trf_data.align.lengths.tolist() == ours[4].align.lengths.tolist()


def test_align_word_pieces_equals_spacy_transformers(tiny_bert: str) -> None:
    """The same alignment as spacy-transformers' `get_alignment_via_offset_mapping` for
    overlapping windows, the same doc twice, whitespace and control-character tokens (no word
    piece), tokens without a space between them, words split into several pieces, accents and
    emoji, a doc made from words, and random texts."""
    import random

    from spacy.tokens import Doc
    from spacy_transformers.align import get_alignment_via_offset_mapping
    from spacy_transformers.span_getters import get_strided_spans
    from transformers import AutoTokenizer

    from spacy_bert_ner.transformer_model import align_word_pieces

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert, use_fast=True)
    nlp = spacy.blank("en")
    texts = [
        TEXT,
        "acme  corp \n paris \t\t x",
        "john \x07 smith\x00",
        "(U.S.-based)anti-disestablishmentarianism!!",
        "Zürich, São Paulo 😀 naïve café",
        " ".join([TEXT] * 30),
    ]
    rng = random.Random(0)
    alphabet = ["a", "bc", "Déf", "!", "-", " ", "  ", "\n", "😀", "xyzzyplugh", "0.5"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(30)]
    docs = [nlp.make_doc(text) for text in texts]
    docs.append(Doc(nlp.vocab, words=["paris", " ", "x", "y"], spaces=[False, True, False, False]))
    docs.append(docs[0])

    def both_alignments(spans):
        encoding = tokenizer(
            [span.text for span in spans],
            return_offsets_mapping=True,
            return_tensors="np",
            padding="longest",
        )
        offsets = encoding["offset_mapping"]
        return align_word_pieces(spans, offsets), get_alignment_via_offset_mapping(spans, offsets)

    # All docs in one batch, and one doc at a time.
    batches = [get_strided_spans(docs, 16, 12)] + [get_strided_spans([d], 16, 12) for d in docs[:8]]
    for nested in batches:
        ours, theirs = both_alignments([span for doc_spans in nested for span in doc_spans])
        assert ours.lengths.tolist() == theirs.lengths.tolist()
        assert ours.dataXd.tolist() == theirs.dataXd.tolist()
    assert sum(len(doc_spans) for doc_spans in batches[0]) > len(docs)  # overlapping windows
    ours, _ = both_alignments([span for doc_spans in batches[0] for span in doc_spans])
    assert (ours.lengths == 0).any() and (ours.lengths > 2).any()
    with pytest.raises(ValueError, match="different sizes"):
        align_word_pieces(list(batches[0][0]) * 2, numpy.zeros((1, 4, 2), dtype="int64"))


CASE_TYPES = {
    "components.transformer.model.@architectures": "spacy_bert_ner.TransformerModel.v2",
    "components.transformer.model.case_types": True,
}
CASED_TEXT = "John Smith works for ACME Corp in paris , A GOOGLE office ."
# [CLS] john smith works for acme corp in paris , a google office . [SEP]
CASED_TYPES = [0, 1, 1, 0, 0, 2, 1, 0, 0, 0, 1, 2, 0, 0, 0]


def test_case_type_ids() -> None:
    """A word piece's case type comes from the characters it covers: a capital first letter, all
    capitals (two letters or more), or neither; special tokens and padding cover none."""
    from spacy_bert_ner.transformer_model import ALL_CAPS, CAPITALISED, LOWER, case_type_ids

    texts = ["John ACME x", "iPhone A1 ÉTÉ 42"]
    # [CLS] john ac ##me x [SEP] [PAD]... / [CLS] i ##phone a ##1 été 42 [SEP]
    offsets = [
        [(0, 0), (0, 4), (5, 7), (7, 9), (10, 11), (0, 0), (0, 0), (0, 0)],
        [(0, 0), (0, 1), (1, 6), (7, 8), (8, 9), (10, 13), (14, 16), (0, 0)],
    ]
    ids = case_type_ids(texts, numpy.array(offsets))
    L, C, A = LOWER, CAPITALISED, ALL_CAPS
    assert ids.tolist() == [[L, C, A, A, L, L, L, L], [L, L, C, C, L, A, L, L]]

    # The same as Python's str methods for random pieces of random texts, beyond ASCII too.
    import random

    def reference(text: str, start: int, end: int) -> int:
        piece = text[start:end]
        if not piece or not piece[0].isupper():
            return L
        return A if len(piece) > 1 and not any(c.islower() for c in piece) else C

    rng = random.Random(0)
    alphabet = ["a", "B", "CD", "Éé", "ß", "İ", "ǅ", "😀", "𝐀", "ΣΑ", " ", "-", "1", "Ab"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(50)]
    offsets = [
        [tuple(sorted(rng.choices(range(len(t) + 1), k=2))) for _ in range(4)] for t in texts
    ]
    ids = case_type_ids(texts, numpy.array(offsets))
    expected = [[reference(t, a, b) for a, b in row] for t, row in zip(texts, offsets)]
    assert ids.tolist() == expected
    assert {L, C, A} <= set(ids.ravel().tolist())


def test_case_types_start_from_the_pretrained_encoder(tiny_bert: str) -> None:
    """`TransformerModel.v2` gives the encoder a token type row per case type, each a copy of
    row 0, and the word pieces their case types: freshly initialized, it computes what v1 does."""
    from util import build_nlp

    from spacy_bert_ner.transformer_model import N_CASE_TYPES

    labels = ["ORG", "PER"]
    v1, v2 = build_nlp(tiny_bert, init_labels=labels), build_nlp(tiny_bert, CASE_TYPES, labels)
    for nlp in (v1, v2):
        nlp.initialize()
    model = v2.get_pipe("transformer").model
    rows = model.transformer.embeddings.token_type_embeddings.weight.detach()
    assert rows.shape[0] == N_CASE_TYPES == model.transformer.config.type_vocab_size
    assert all((rows[i] == rows[0]).all() for i in range(N_CASE_TYPES))
    docs1, docs2 = list(v1.pipe([CASED_TEXT, TEXT])), list(v2.pipe([CASED_TEXT, TEXT]))
    assert docs1[0]._.trf_data.wordpieces.token_type_ids.tolist() == [[0] * 15]
    types = docs2[0]._.trf_data.wordpieces.token_type_ids.tolist()[0]
    assert types == CASED_TYPES
    for doc1, doc2 in zip(docs1, docs2):
        numpy.testing.assert_allclose(
            doc1._.trf_data.model_output.last_hidden_state,
            doc2._.trf_data.model_output.last_hidden_state,
            atol=1e-6,
        )


def test_case_types_train_save_and_copy(tiny_bert: str, tmp_path: Path) -> None:
    """Training teaches the case types apart; a saved pipeline loads with them (and its encoder
    is not extended again); `copy()` (as `nlp.replace_listeners` calls it) keeps them."""
    from spacy.training import Example
    from thinc.api import Adam
    from util import build_nlp, train

    nlp = build_nlp(tiny_bert, CASE_TYPES)
    train(nlp, 2)  # lowercase data: the case types' rows are not used yet
    cased = Example.from_dict(
        nlp.make_doc(CASED_TEXT), {"entities": [(0, 10, "PER"), (21, 30, "ORG")]}
    )
    optimizer = Adam(1e-3)
    for _ in range(2):
        nlp.update([cased], sgd=optimizer)
    model = nlp.get_pipe("transformer").model
    rows = model.transformer.embeddings.token_type_embeddings.weight.detach()
    assert not (rows[1] == rows[0]).all() and not (rows[2] == rows[1]).all()
    nlp.to_disk(tmp_path)
    loaded = spacy.load(tmp_path)
    loaded_model = loaded.get_pipe("transformer").model
    loaded_model.initialize()
    loaded_rows = loaded_model.transformer.embeddings.token_type_embeddings.weight.detach()
    numpy.testing.assert_array_equal(loaded_rows.numpy(), rows.numpy())
    before, after = nlp(CASED_TEXT), loaded(CASED_TEXT)
    numpy.testing.assert_allclose(
        before._.trf_data.model_output.last_hidden_state,
        after._.trf_data.model_output.last_hidden_state,
        atol=1e-6,
    )
    assert [e.text for e in before.ents] == [e.text for e in after.ents]
    copied = model.copy()
    assert isinstance(copied, FastTransformerModel) and copied.attrs["case_types"]
    copied_batch, _ = copied._func(copied, [nlp.make_doc(CASED_TEXT)], False)
    assert copied_batch.wordpieces.token_type_ids.tolist() == [CASED_TYPES]


def test_case_types_say_what_they_need(tiny_bert: str) -> None:
    """An encoder without token type embeddings, or a tokenizer without character offsets, is
    refused with the setting to change."""
    from transformers import DistilBertConfig, DistilBertModel
    from util import build_nlp

    from spacy_bert_ner.transformer_model import add_case_types

    distilbert = DistilBertModel(DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64))
    with pytest.raises(ValueError, match="no token type embeddings|has none"):
        add_case_types(distilbert, "distilbert")
    slow = build_nlp(
        tiny_bert,
        {**CASE_TYPES, "components.transformer.model.tokenizer_config.use_fast": False},
        ["ORG"],
    )
    with pytest.raises(ValueError, match="needs a fast tokenizer"):
        slow.initialize()
        slow(CASED_TEXT)
