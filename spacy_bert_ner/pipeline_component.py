"""The `bert_ner` pipeline component (factory and TrainablePipe): BERT-style token
classification NER for spaCy.

Each spaCy token gets a tag (B-PER, I-PER, O, ...) from a softmax over the pooled word-piece vectors
of a transformer; training minimises cross-entropy against the gold tags (`gold` aligns them to the
tokens, `loss` computes the loss); prediction decodes the tag probabilities into a valid tag
sequence and merges consecutive tags into entities on `doc.ents` (`decoding`).
"""

import warnings
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union, cast

import numpy
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, to_numpy
from thinc.types import Floats2d, Ints1d

from .crf import transition_scores
from .decoding import (
    Entity,
    check_decoder,
    check_scheme,
    constraints_for,
    decode_batch,
    make_tags,
)
from .distillation import batch_teacher_rows, check_teacher_targets, check_teacher_weight
from .gold import MISALIGNED_WARNING, batch_gold_tag_ids, unknown_labels_warning
from .listener import blank_tokens, check_upstream
from .loss import check_loss, crf_sequence_loss, gold_loss, mixed_targets, soft_target_loss
from .optimizers import update_all
from .scorer import score_ents

# The component's default model, its one definition: configs/bert_ner.cfg leaves these blocks empty
# and `spacy train` (like `nlp.add_pipe("bert_ner")`) fills them from here. The figures behind each
# choice are in BENCHMARKS.md.
DEFAULT_MODEL_CONFIG = """
# A softmax over tags per token (no hidden layer: the classic BERT recipe), over the concatenation
# of the transformer's vectors and the casing features. The output layer starts from normal(0, 0.02)
# weights; see TokenClassifier.v3. `crf = true` adds a linear-chain CRF (learned transition scores,
# a sequence-level loss; spacy_bert_ner/crf.py).
[model]
@architectures = "spacy_bert_ner.TokenClassifier.v3"
hidden_width = 0
crf = false
crf_rate_scale = 1.0
nO = null

# The vectors of the `transformer` component earlier in the pipeline, fine-tuned through this
# listener (spacy-transformers' TransformerListener.v1, with its per-step batch check in array
# operations); a token's vector is the mean of its word pieces' (reduce_first.v1: the first's).
[model.tok2vec]
@architectures = "spacy_bert_ner.TransformerListener.v1"
grad_factor = 1.0
upstream = "*"

[model.tok2vec.pooling]
@layers = "reduce_mean.v1"

# Casing features: the default encoder is uncased, so hash embeddings of each token's shape
# ("Xxxxx"), first character and last three characters give the classifier capitalisation back;
# two maxout layers over a window of one token either side let each token also see its neighbours'
# casing (fewer boundary errors). These are spaCy's MultiHashEmbed.v2 and MaxoutWindowEncoder.v2
# chained as in spacy.Tok2Vec.v2, with the same outputs, run once per batch instead of doc by doc
# (spacy_bert_ner/casing.py). Width 64: width 32 trained faster on the CPU proxy, but scored
# 0.25-0.31 lower test F1 on CoNLL-2003 over four seeds (BENCHMARKS.md, issue 12).
# `features = null` turns them off.
[model.features]
@architectures = "spacy_bert_ner.CasingFeatures.v1"
width = 64
attrs = ["SHAPE","PREFIX","SUFFIX"]
rows = [1000,2500,2500]
window_size = 1
depth = 2
maxout_pieces = 3
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_MODEL_CONFIG)["model"]


@Language.factory(
    "bert_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type", "doc.spans"],
    default_config={
        "model": DEFAULT_MODEL,
        "scheme": "BILUO",
        "decoder": "viterbi",
        "outside_bias": 0.0,
        "teacher_weight": 0.0,
        "overwrite_ents": True,
        "spans_key": "bert_ner",
        "scorer": {"@scorers": "spacy_bert_ner.ner_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_bert_ner(
    nlp: Language,
    name: str,
    model: Model[List[Doc], List[Floats2d]],
    scheme: str,
    decoder: str,
    outside_bias: float,
    teacher_weight: float,
    overwrite_ents: bool,
    spans_key: str,
    scorer: Optional[Callable],
) -> "BertNER":
    """Create a `bert_ner` component.

    model (Model[List[Doc], List[Floats2d]]): Tag probabilities per token; by default
        `spacy_bert_ner.TokenClassifier.v3` over a `TransformerListener` (mean-pooled word pieces)
        that listens to a `transformer` component earlier in the pipeline, plus casing features.
    scheme (str): Tag scheme, "BILUO" (default: it marks entity ends too) or "BIO".
    decoder (str): "viterbi" (default) finds the most probable *valid* tag sequence; "greedy"
        takes each token's most probable tag, for comparison.
    outside_bias (float): Subtracted from the log-probability of the 'O' tag before decoding. 0
        (default) decodes the classifier's probabilities as they are; above 0 trades precision for
        recall (on a corpus where the model misses many entities, choose it on dev).
    teacher_weight (float): Training only: the share of the cross-entropy target taken from the
        teacher tag probabilities stored on the training docs by `python -m spacy_bert_ner
        distill` (spacy_bert_ner/distillation.py); 0 (default) trains on the gold tags alone.
    overwrite_ents (bool): True (default) replaces `doc.ents`; False keeps the entities already
        there and adds only predicted ones that do not overlap them.
    spans_key (str): Key of the `doc.spans` group that receives every predicted entity, with
        `attrs["scores"]` holding one confidence in [0, 1] per entity.
    scorer (Optional[Callable]): Scores `doc.ents`; by default `spacy_bert_ner.ner_scorer.v1`.
    """
    return BertNER(
        nlp.vocab,
        model,
        name,
        scheme=scheme,
        decoder=decoder,
        outside_bias=outside_bias,
        teacher_weight=teacher_weight,
        overwrite_ents=overwrite_ents,
        spans_key=spans_key,
        scorer=scorer,
    )


# The settings a BertNER takes from its config each time it is built or loaded (not saved with it).
RUN_TIME_SETTINGS = (
    "decoder",
    "outside_bias",
    "teacher_weight",
    "overwrite_ents",
    "spans_key",
)


class BertNER(TrainablePipe):
    """Token-classification NER: a softmax over tags per token, decoded into `doc.ents`."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model[List[Doc], List[Floats2d]],
        name: str = "bert_ner",
        *,
        scheme: str = "BILUO",
        decoder: str = "viterbi",
        outside_bias: float = 0.0,
        teacher_weight: float = 0.0,
        overwrite_ents: bool = True,
        spans_key: str = "bert_ner",
        scorer: Optional[Callable] = score_ents,
    ) -> None:
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        # Saved with the model: what its output layer means.
        self.cfg: Dict[str, Any] = {"labels": [], "scheme": check_scheme(scheme)}
        # Gold labels outside `labels` already warned about, so each is reported once.
        self._unknown_labels_seen: set = set()
        # Run-time settings: taken from the config each time the pipeline is built or loaded.
        self.decoder = check_decoder(decoder)
        self.outside_bias = float(outside_bias)
        self.teacher_weight = check_teacher_weight(teacher_weight)
        self.overwrite_ents = overwrite_ents
        self.spans_key = spans_key
        self._built_with = self._run_time_settings()

    def _run_time_settings(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in RUN_TIME_SETTINGS}

    def _warn_unsaved_settings(self) -> None:
        """Warn when a run-time setting was changed on the object after it was built: the change
        is not saved, since a loaded pipeline takes these settings from its config."""
        changed = {
            name: value
            for name, value in self._run_time_settings().items()
            if value != self._built_with[name]
        }
        if not changed:
            return
        now = ", ".join(f"{name} = {value!r}" for name, value in changed.items())
        config = ", ".join(f"{name} = {self._built_with[name]!r}" for name in changed)
        override = ", ".join(f'"{name}": {value!r}' for name, value in changed.items())
        warnings.warn(
            f"[bert_ner] '{self.name}' has {now}, set after the pipeline was built and not saved "
            f"with it: a loaded pipeline takes its run-time settings from its config, which says "
            f"{config}. To save them, put them in the config: load with spacy.load(path, "
            f'config={{"components": {{"{self.name}": {{{override}}}}}}}) and save that pipeline.',
            stacklevel=3,
        )

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        """Save the trained model; run-time settings are the config's (`_warn_unsaved_settings`)."""
        self._warn_unsaved_settings()
        super().to_disk(path, exclude=exclude)

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        """Save the trained model as bytes; see `to_disk`."""
        self._warn_unsaved_settings()
        return super().to_bytes(exclude=exclude)

    @property
    def labels(self) -> Tuple[str, ...]:
        """The entity labels (PER, ORG, ...), in the order their tags appear in the output."""
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> Tuple[str, ...]:
        """What `spacy init labels` saves and `initialize(labels=...)` takes back."""
        return self.labels

    @property
    def tags(self) -> List[str]:
        """The tags the model predicts: 'O', then each label's B-/I- (or B-/I-/L-/U-) tags."""
        return make_tags(self.labels, self.cfg["scheme"])

    def add_label(self, label: str) -> int:
        """Add an entity label. Returns 0 if it was already present, else 1."""
        if not isinstance(label, str) or not label.strip() or label != label.strip():
            raise ValueError(
                f"[bert_ner] Invalid entity label {label!r}: labels are non-empty strings without "
                "surrounding whitespace, e.g. 'PER'."
            )
        if label in self.labels:
            return 0
        self._allow_extra_label()
        self.cfg["labels"].append(label)
        self.vocab.strings.add(label)
        return 1

    def _allow_extra_label(self) -> None:
        output_layer = self.model.get_ref("output_layer")
        if output_layer.has_dim("nO") and output_layer.get_dim("nO") == len(self.tags):
            raise ValueError(
                f"[bert_ner] Cannot add the label to '{self.name}': its model is already "
                "initialized with a fixed number of tags. Build a new component and give it all "
                "labels at once, from the training data or [initialize.components.bert_ner.labels]."
            )

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> None:
        """Collect the labels (from `labels`, else from the examples' entities) and size the model.

        labels (Optional[Sequence[str]]): Entity labels, e.g. from `spacy init labels`; when None,
            every label found on the reference docs' entities is used, sorted.
        """
        validate_get_examples(get_examples, "BertNER.initialize")
        found = Counter(ent.label_ for eg in get_examples() for ent in eg.reference.ents)
        if labels is None:
            labels = sorted(found)
        for label in labels:
            self.add_label(label)
        if not self.labels:
            raise ValueError(
                f"[bert_ner] No entity labels to initialize '{self.name}' with: the training "
                "examples have no entities and no labels were given. Check that the training "
                "corpus has entity annotations (`python -m spacy debug data CONFIG`), or list the "
                "labels under [initialize.components.bert_ner.labels]."
            )
        unknown = Counter({label: n for label, n in found.items() if label not in self.labels})
        if unknown:
            self._warn_unknown_labels(unknown, "in the training data")
        if self.teacher_weight:
            check_teacher_targets(self.name, self.teacher_weight, islice(get_examples(), 100))
        doc_sample = [eg.predicted for eg in islice(get_examples(), 10)]
        self.model.get_ref("output_layer").set_dim("nO", len(self.tags))
        if self.model.has_ref("transitions"):
            self.model.get_ref("transitions").set_dim("nO", len(self.tags))
        self.model.initialize(X=doc_sample)

    def predict(self, docs: Iterable[Doc]) -> List[Floats2d]:
        """Tag probabilities for each doc, one row per token."""
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            n_tags = len(self.tags)
            return [self.model.ops.alloc2f(len(doc), n_tags) for doc in docs]
        check_upstream(self.name, self.model, docs)
        return self.model.predict(docs)

    def set_annotations(self, docs: Iterable[Doc], scores: List[Floats2d]) -> None:
        """Decode the tag probabilities and write the entities to `doc.ents` and `doc.spans`.

        The batch's probabilities come to the host in one copy (on a GPU, a copy per doc waits for
        the device each time) and are decoded together (`decoding.decode_batch`)."""
        docs = list(docs)
        if not docs:
            return
        tags = self.tags
        probs = to_numpy(self.model.ops.xp.concatenate(scores, axis=0))
        blank = numpy.concatenate([blank_tokens(doc) for doc in docs])
        probs[blank] = 0.0
        probs[blank, tags.index("O")] = 1.0
        entities = decode_batch(
            probs,
            [len(doc_scores) for doc_scores in scores],
            tags,
            constraints_for(tags, self.cfg["scheme"]),
            self.decoder,
            self.outside_bias,
            self._transitions(),
        )
        for doc, doc_entities in zip(docs, entities):
            self._set_doc_entities(doc, doc_entities)

    def _set_doc_entities(self, doc: Doc, entities: List[Entity]) -> None:
        spans = [Span(doc, ent.start, ent.end, label=ent.label) for ent in entities]
        group = SpanGroup(doc, name=self.spans_key, spans=spans)
        group.attrs["scores"] = [ent.score for ent in entities]
        doc.spans[self.spans_key] = group
        if self.overwrite_ents:
            doc.ents = spans
            return
        taken = numpy.zeros(len(doc), dtype=bool)
        for ent in doc.ents:
            taken[ent.start : ent.end] = True
        new = [span for span in spans if not taken[span.start : span.end].any()]
        doc.set_ents(new, default="unmodified")

    def get_loss(self, examples: Iterable[Example], scores: List[Floats2d]) -> Tuple[float, Any]:
        """The loss of the predicted tag probabilities against the gold tags, and its gradient.

        Gold entities are aligned to the predicted tokenization (`gold`); tokens with missing
        annotation (or whose gold entity does not align) carry no loss. The loss (`loss`) is the
        cross-entropy against the gold tags; with a CRF, the CRF's negative log-likelihood of
        each doc's tag sequence; with `teacher_weight` w above 0, the cross-entropy against
        1 - w of the gold tag plus w of the teacher probabilities (`distillation`; w of them
        alone where the gold tag is missing). Returns (summed loss, d_scores), where d_scores is
        the gradient with respect to the softmax's input.
        """
        validate_examples(examples, "BertNER.get_loss")
        examples = list(examples)
        ops = self.model.ops
        gold = self._gold_tag_ids(examples)
        probs = ops.flatten(scores)
        lengths = [len(s) for s in scores]
        if self.model.has_ref("transitions"):
            self._check_crf_settings()
            loss, d_probs = crf_sequence_loss(
                probs,
                lengths,
                gold,
                self.model.get_ref("transitions"),
                constraints_for(self.tags, self.cfg["scheme"]),
            )
        else:
            teacher = (
                batch_teacher_rows(examples, self.tags, self.name) if self.teacher_weight else None
            )
            if teacher is None:
                loss, d_probs = gold_loss(probs, gold)
            else:
                targets = mixed_targets(gold, teacher, self.teacher_weight)
                loss, d_probs = soft_target_loss(probs, targets)
        check_loss(loss, self.name)
        return loss, ops.unflatten(d_probs, ops.asarray1i(lengths))

    def _check_crf_settings(self) -> None:
        if self.teacher_weight:
            raise ValueError(
                f"[bert_ner] '{self.name}' has a CRF (crf = true), which trains on whole tag "
                "sequences: teacher_weight sets per-token targets and does not apply. Set "
                "teacher_weight = 0.0, or crf = false."
            )

    def _transitions(self) -> Optional[numpy.ndarray]:
        """The CRF's learned transition scores, on the host; None without a CRF."""
        if not self.model.has_ref("transitions"):
            return None
        return to_numpy(transition_scores(self.model.get_ref("transitions")))

    def finish_update(self, sgd: Optimizer) -> None:
        """Update the model's parameters from their gradients: all at once with
        `spacy_bert_ner.Adam.v1` or `.v2` where `optimizers.update_all` applies, else one by one
        as thinc does."""
        if not update_all(self.model, sgd):
            self.model.finish_update(sgd)

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> "BertNER":
        """Load the trained model; its `scheme` (and labels) come from disk, not the config."""
        requested = self.cfg["scheme"]
        super().from_disk(path, exclude=exclude)
        self._check_loaded_scheme(requested)
        return self

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "BertNER":
        """Load the trained model from bytes; see `from_disk`."""
        requested = self.cfg["scheme"]
        super().from_bytes(bytes_data, exclude=exclude)
        self._check_loaded_scheme(requested)
        return self

    def _check_loaded_scheme(self, requested: str) -> None:
        trained = self.cfg["scheme"]
        if requested != trained:
            raise ValueError(
                f"[bert_ner] The config of '{self.name}' asks for scheme {requested!r}, but the "
                f"model being loaded was trained with {trained!r}: its output layer predicts "
                f"{trained} tags, so the scheme cannot change at load time. Load it without the "
                f"scheme override (or with scheme = {trained!r}), or retrain with the scheme you "
                "want."
            )

    def _warn_unknown_labels(self, counts: Counter, where: str) -> None:
        """Warn once per label about gold entities that will be trained as outside ('O')."""
        new = {label: n for label, n in counts.items() if label not in self._unknown_labels_seen}
        if not new:
            return
        self._unknown_labels_seen.update(new)
        message = unknown_labels_warning(self.name, self.labels, new, where)
        warnings.warn(message, UserWarning, stacklevel=3)

    def _gold_tag_ids(self, examples: List[Example]) -> Ints1d:
        """Gold tag index per predicted token across the batch; -1 marks missing annotation."""
        ids, misaligned, unknown = batch_gold_tag_ids(examples, self.tags, self.cfg["scheme"])
        if misaligned:
            warnings.warn(MISALIGNED_WARNING, UserWarning, stacklevel=3)
        if unknown:
            self._warn_unknown_labels(unknown, "in this batch")
        return self.model.ops.asarray1i(cast(Ints1d, ids))
