"""Encoders other than BERT: tiny random RoBERTa, MPNet, DeBERTa-v2, DistilBERT and ELECTRA models,
each built here from its `transformers` config class with a tokenizer of its own kind (byte-level
BPE, WordPiece with `<s>`/`</s>`, SentencePiece-style Unigram from `tokenizers` with no
SentencePiece model, WordPiece without token type ids, cased WordPiece with token type ids), and
the project's pipeline trained, saved, loaded and quantized over each.

They catch what differs between architectures: a word piece given to the wrong token (DeBERTa's
"▁Paris" covers the space before it), inputs the model does not expect (token type ids) or
positions out of range (RoBERTa's and MPNet's positions start after the padding id), a tokenizer
spacy-transformers cannot save, windows with more word pieces than the encoder takes, parameter
names the layer-wise learning rates do not recognise.
"""

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy
import pytest
import spacy
import torch
from spacy.language import Language
from spacy.tokens import Doc
from synthetic import make_sentences, vocabulary
from util import build_nlp, train

from spacy_bert_ner import quantize
from spacy_bert_ner.optimizers import layer_lr_scales

ARCHITECTURES = ["roberta", "mpnet", "deberta-v2", "distilbert", "electra"]
# The encoders take 64 word pieces; the pipeline's windows (16 spaCy tokens, stride 12) fit.
MAX_LENGTH = 64
WINDOW = {
    "components.transformer.model.get_spans.window": 16,
    "components.transformer.model.get_spans.stride": 12,
}
SENTENCE = "john smith works for acme corp in paris ."
EXPECTED = [("john smith", "PER"), ("acme corp", "ORG"), ("paris", "LOC")]
# Capitals, a double space, a newline, punctuation against words, a word no vocabulary has.
MIXED = "John Smith  works for ACME-corp (in Paris).\nYesterday Mary Jones visited Zürich!"


def _texts() -> List[str]:
    """Training text for the tokenizers: the synthetic sentences, lowercase, titled and upper."""
    texts = [" ".join(words) for words, _ in make_sentences(200, 1)]
    return texts + [text.title() for text in texts] + [text.upper() for text in texts]


def _wordpiece_vocab(path: Path, specials: List[str]) -> str:
    """conftest's tiny BERT vocabulary with the architecture's own special tokens."""
    words = [w for w in vocabulary() if not (w.startswith("[") and w.endswith("]"))]
    (path / "vocab.txt").write_text("\n".join(specials + words) + "\n", encoding="utf8")
    return str(path / "vocab.txt")


def build_encoder(arch: str, path: Path) -> str:
    """A randomly initialised 2-layer encoder of `arch` (hidden size 32, 64 word pieces at most)
    and its tokenizer, saved to `path` as `save_pretrained` saves them."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    tokenizer: tf.PreTrainedTokenizerFast
    model: tf.PreTrainedModel
    if arch == "roberta":
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        bpe.train_from_iterator(_texts(), trainer)
        vocab_file, merges_file = bpe.model.save(str(path))
        tokenizer = tf.RobertaTokenizerFast(vocab_file, merges_file, model_max_length=MAX_LENGTH)
        # Positions start after the padding id (1): 2 more position embeddings than pieces.
        config = tf.RobertaConfig(
            vocab_size=bpe.get_vocab_size(),
            max_position_embeddings=MAX_LENGTH + 2,
            type_vocab_size=1,
            **small,
        )
        model = tf.RobertaModel(config)
    elif arch == "mpnet":
        vocab_file = _wordpiece_vocab(path, ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"])
        tokenizer = tf.MPNetTokenizerFast(vocab_file, model_max_length=MAX_LENGTH)
        # transformers' MPNet computes 32 relative-position buckets whatever the config says.
        config = tf.MPNetConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=MAX_LENGTH + 2,
            relative_attention_num_buckets=32,
            **small,
        )
        model = tf.MPNetModel(config)
    elif arch == "deberta-v2":
        # DeBERTa-v2/v3 ship a SentencePiece model; a Unigram model with SentencePiece's "▁"
        # pre-tokenization, from `tokenizers`, is the same kind of tokenizer without the
        # sentencepiece package (saved as tokenizer.json only: its `vocab_file` is None).
        unigram = Tokenizer(models.Unigram())
        unigram.pre_tokenizer = pre_tokenizers.Metaspace()
        unigram.decoder = decoders.Metaspace()
        unigram.train_from_iterator(
            _texts(),
            trainers.UnigramTrainer(
                vocab_size=600,
                special_tokens=["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
                unk_token="[UNK]",
            ),
        )
        cls, sep = unigram.token_to_id("[CLS]"), unigram.token_to_id("[SEP]")
        unigram.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
        )
        tokenizer = tf.DebertaV2TokenizerFast(tokenizer_object=unigram, model_max_length=MAX_LENGTH)
        config = tf.DebertaV2Config(
            vocab_size=unigram.get_vocab_size(),
            max_position_embeddings=MAX_LENGTH,
            relative_attention=True,
            position_buckets=16,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            type_vocab_size=0,
            **small,
        )
        model = tf.DebertaV2Model(config)
    elif arch == "distilbert":
        vocab_file = _wordpiece_vocab(path, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        tokenizer = tf.DistilBertTokenizerFast(vocab_file, model_max_length=MAX_LENGTH)
        config = tf.DistilBertConfig(
            vocab_size=len(tokenizer),
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=MAX_LENGTH,
        )
        model = tf.DistilBertModel(config)
    elif arch == "electra":
        # Cased (capitalised words are unknown to the lowercase vocabulary), token type ids, and
        # embeddings narrower than the hidden layers (projected up).
        vocab_file = _wordpiece_vocab(path, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        tokenizer = tf.ElectraTokenizerFast(
            vocab_file, do_lower_case=False, model_max_length=MAX_LENGTH
        )
        config = tf.ElectraConfig(
            vocab_size=len(tokenizer),
            embedding_size=16,
            max_position_embeddings=MAX_LENGTH,
            **small,
        )
        model = tf.ElectraModel(config)
    else:
        raise ValueError(arch)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def trained(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Tuple[str, Language, List[float], Path]:
    """(architecture, the pipeline trained over its tiny encoder, the losses of its 4 epochs,
    where it was saved)."""
    arch = request.param
    encoder = build_encoder(arch, tmp_path_factory.mktemp(arch))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        nlp = build_nlp(encoder, overrides=WINDOW)
        losses = train(nlp, 4)
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp(f"{arch}-pipeline")
    nlp.to_disk(path)
    return arch, nlp, losses, path


def _ents(doc: Doc) -> List[Tuple[str, str]]:
    return [(ent.text, ent.label_) for ent in doc.ents]


@contextmanager
def _one_window(nlp: Language) -> Iterator[None]:
    """Each doc encoded in one window: its word pieces numbered as the tokenizer numbers them."""
    from spacy_transformers.span_getters import configure_strided_spans

    model = nlp.get_pipe("transformer").model
    get_spans = model.attrs["get_spans"]
    model.attrs["get_spans"] = configure_strided_spans(1000, 1000)
    try:
        yield
    finally:
        model.attrs["get_spans"] = get_spans


def _pieces_of_tokens(doc: Doc) -> List[List[int]]:
    """The (flattened) word pieces aligned to each token of an annotated doc."""
    align = doc._.trf_data.align
    ends = numpy.cumsum(align.lengths)
    data = align.dataXd.tolist()
    return [data[end - n : end] for n, end in zip(align.lengths.tolist(), ends.tolist())]


def test_training_reduces_the_loss_and_prediction_sets_ents(trained) -> None:
    arch, nlp, losses, _ = trained
    assert losses[-1] < 0.5 * losses[0], (arch, losses)
    doc = nlp(SENTENCE)
    assert _ents(doc) == EXPECTED, arch
    assert _ents(doc) == [(span.text, span.label_) for span in doc.spans["bert_ner"]]


def test_word_pieces_align_to_their_tokens(trained) -> None:
    """Each token gets the word pieces whose characters are its own: their text, read from the
    tokenizer's offsets without the space before a word that SentencePiece-style pieces include,
    is the token's text (a word no vocabulary has: the unknown piece covering it; "ü": the two
    byte-level pieces that share it); whitespace
    tokens get none, every other token at least one."""
    arch, nlp, _, _ = trained
    with _one_window(nlp):
        doc = nlp(MIXED)
    encoding = nlp.get_pipe("transformer").model.tokenizer(doc.text, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    for token, pieces in zip(doc, _pieces_of_tokens(doc)):
        chars = {c for i in pieces for c in range(*offsets[i])}  # pieces may share one
        text = "".join(doc.text[c] for c in sorted(chars))
        if token.is_space:
            assert pieces == [], (arch, token.i)
        else:
            assert pieces and text.strip() == token.text, (arch, token.text, text)
    assert doc._.trf_data.wordpieces.strings[0][0] == encoding.tokens()[0]  # special tokens kept


def test_hidden_states_are_the_encoders_own(trained) -> None:
    """The transformer's output for a doc in one window is what transformers' model gives for the
    tokenizer's encoding of the text: the same inputs (token type ids where the model takes them,
    none where it does not) and positions, up to the most word pieces the encoder takes (a longer
    window is cut there, as spacy-transformers cuts it: the end, its last special token too)."""
    arch, nlp, _, _ = trained
    model = nlp.get_pipe("transformer").model
    training = model.transformer.training
    try:
        for n in (1, 8):  # about 12 word pieces, and more than the 64 the encoder takes
            text = " ".join([SENTENCE] * n)
            with _one_window(nlp), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                doc = nlp(text)
            encoding = model.tokenizer(text, return_tensors="pt", verbose=False)
            assert ("token_type_ids" in encoding) == (arch in ("deberta-v2", "electra")), arch
            inputs = {key: value[:, :MAX_LENGTH] for key, value in encoding.items()}
            with torch.inference_mode():
                expected = model.transformer.eval()(**inputs).last_hidden_state.numpy()
            hidden = doc._.trf_data.model_output["last_hidden_state"]
            assert hidden.shape == expected.shape, arch
            assert (hidden.shape[1] == MAX_LENGTH) == (n == 8), arch
            numpy.testing.assert_allclose(hidden, expected, atol=1e-5, err_msg=arch)
    finally:
        model.transformer.train(training)


def test_long_documents_are_encoded_in_windows(trained, monkeypatch) -> None:
    """A document of 40 sentences is encoded in many windows, every token gets word pieces, and
    every sentence gets the entities the sentence alone gets; the same when each window is
    encoded alone, cut to its own length (`window_batches.WINDOW_BATCH_PIECES`)."""
    from spacy_bert_ner import window_batches

    arch, _, _, path = trained
    nlp = spacy.load(path)
    for window_batch_pieces in (window_batches.WINDOW_BATCH_PIECES, 1):
        monkeypatch.setattr(window_batches, "WINDOW_BATCH_PIECES", window_batch_pieces)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # every window fits: no warning
            doc = nlp(" ".join([SENTENCE] * 40))
        assert len(doc._.trf_data.wordpieces.input_ids) > 10, arch
        assert all(_pieces_of_tokens(doc)), arch
        assert _ents(doc) == EXPECTED * 40, arch


def test_windows_longer_than_the_encoder_takes_are_warned_about(trained) -> None:
    """With the default windows (128 spaCy tokens), a window of these sentences has more word
    pieces than the 64 the encoder takes: a warning says how many tokens lost their pieces and
    which setting to lower."""
    from spacy_transformers.span_getters import configure_strided_spans

    arch, _, _, path = trained
    nlp = spacy.load(path)
    nlp.get_pipe("transformer").model.attrs["get_spans"] = configure_strided_spans(128, 96)
    with pytest.warns(UserWarning, match=r"tokens got no word pieces.*get_spans\.window"):
        doc = nlp(" ".join([SENTENCE] * 40))
    assert not all(_pieces_of_tokens(doc)), arch


def test_saved_pipeline_loads_and_predicts_the_same(trained) -> None:
    arch, nlp, _, path = trained
    loaded = spacy.load(path)
    # The encoder's config exactly: spacy-transformers' loading rounded 1e-12 (layer_norm_eps)
    # to 0, and a padded MPNet batch gave NaN (no entities for any doc but the longest).
    config = nlp.get_pipe("transformer").model.transformer.config.to_dict()
    loaded_config = loaded.get_pipe("transformer").model.transformer.config.to_dict()
    floats = {key: value for key, value in config.items() if isinstance(value, float)}
    assert floats == {key: loaded_config[key] for key in floats}, arch
    texts = [SENTENCE, MIXED, " ".join([SENTENCE] * 12), ""]
    for ours, theirs in zip(nlp.pipe(texts), loaded.pipe(texts)):
        assert _ents(ours) == _ents(theirs), arch
        scores = ours.spans["bert_ner"].attrs["scores"]
        numpy.testing.assert_allclose(theirs.spans["bert_ner"].attrs["scores"], scores, atol=1e-6)
    # And once more, from the saved copy's bytes (the tokenizer as spacy-transformers saved it).
    again = spacy.load(path).from_bytes(loaded.to_bytes())
    assert _ents(again(SENTENCE)) == EXPECTED, arch


def test_int8_pipeline_predicts(trained) -> None:
    arch, _, _, path = trained
    nlp = spacy.load(path)
    texts = [SENTENCE, MIXED, " ".join([SENTENCE] * 5)]
    expected = [_ents(doc) for doc in nlp.pipe(texts)]
    quantize(nlp)
    hf_model = nlp.get_pipe("transformer").model.transformer
    assert not any(isinstance(m, torch.nn.Linear) for m in hf_model.modules()), arch
    assert _ents(nlp(SENTENCE)) == EXPECTED, arch
    agree = [e == _ents(doc) for e, doc in zip(expected, nlp.pipe(texts))]
    assert sum(agree) >= 2, arch


def test_casing_features_are_part_of_the_model(trained) -> None:
    """The casing features (spaCy token attributes, whatever the encoder) are in the model and
    give each token a vector beside the transformer's."""
    arch, nlp, _, _ = trained
    features = nlp.get_pipe("bert_ner").model.get_ref("features")
    doc = nlp.make_doc(MIXED)
    (vectors,) = features.predict([doc])
    assert vectors.shape[0] == len(doc) and numpy.abs(vectors).sum() > 0, arch


def test_layer_wise_learning_rates_find_every_layer(trained) -> None:
    """`Adam.v2`'s layer-wise decay reads layer numbers from parameter names: each architecture's
    two layers are found, their parameters scaled by layer, the embeddings one step below."""
    arch, nlp, _, _ = trained
    names = [name for name, _ in nlp.get_pipe("transformer").model.transformer.named_parameters()]
    scales: Dict[str, float] = layer_lr_scales(names, 0.5)
    assert {scales[n] for n in names if ".layer.1." in n} == {1.0}, arch
    assert {scales[n] for n in names if ".layer.0." in n} == {0.5}, arch
    word_embeddings = [n for n in names if "word_embeddings" in n]
    assert word_embeddings and all(scales[n] == 0.25 for n in word_embeddings), arch


@pytest.mark.parametrize("arch", ["mpnet", "roberta"])
def test_a_folder_that_holds_the_encoder_one_level_down_is_named(arch: str, tmp_path: Path) -> None:
    """An encoder directory without config.json (the model one folder down, as an unpacked zip
    leaves it) is a message naming the folder to pass; transformers guessed a tokenizer class
    from the path's name and failed opening None."""
    from spacy_bert_ner.encoders import load_encoder

    outer = tmp_path / f"{arch}-download"
    (outer / "all-model-v2").mkdir(parents=True)
    build_encoder(arch, outer / "all-model-v2")
    with pytest.raises(ValueError, match="without a config.json") as error:
        load_encoder(str(outer), {}, {})
    assert str(outer / "all-model-v2") in str(error.value)
