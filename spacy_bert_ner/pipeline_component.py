"""The `bert_ner` pipeline component: BERT-style token classification NER for spaCy.

Each spaCy token gets a tag (B-PER, I-PER, O, ...) from a softmax over the pooled word-piece vectors
of a transformer; training minimises cross-entropy against the gold tags; prediction decodes the
tag probabilities into a valid tag sequence and merges consecutive tags into entities on `doc.ents`.
"""

import warnings
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union, cast

import numpy
from spacy.attrs import ENT_IOB, IDX, IS_SPACE, LENGTH, ORTH
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, get_array_module, to_numpy
from thinc.types import Floats2d, Ints1d

from .crf import add_transition_gradient, crf_loss, transition_scores
from .decoding import (
    Entity,
    biluo_to_scheme,
    check_decoder,
    check_scheme,
    constraints_for,
    decode_batch,
    make_tags,
)
from .distillation import TEACHER_KEY, teacher_probs
from .optimizers import update_all
from .scorer import score_ents

# The value of Token.ent_iob for a token annotated as outside any entity (0 is missing, 1 I, 3 B).
IOB_OUTSIDE = 2

# The component's default model, its one definition: configs/bert_ner.cfg leaves these blocks empty
# and `spacy train` (like `nlp.add_pipe("bert_ner")`) fills them from here. The figures behind each
# choice are in BENCHMARKS.md.
DEFAULT_MODEL_CONFIG = """
# A softmax over tags per token (no hidden layer: the classic BERT recipe), over the concatenation
# of the transformer's vectors and the casing features. The output layer starts from normal(0, 0.02)
# weights; see TokenClassifier.v2. `crf = true` adds a linear-chain CRF (learned transition scores,
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

# Logged once per process: misaligned gold spans are ignored in the loss, never silently.
MISALIGNED_WARNING = (
    "[bert_ner] Some gold entities do not align to the predicted tokenization; their tokens are "
    "treated as missing annotation and ignored in the loss. Check the training data with "
    "`python -m spacy debug data`, or retokenize it so every entity starts and ends on a token "
    "boundary."
)


@Language.factory(
    "bert_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type", "doc.spans"],
    default_config={
        "model": DEFAULT_MODEL,
        "scheme": "BILUO",
        "decoder": "viterbi",
        "outside_bias": 0.0,
        "label_smoothing": 0.0,
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
    label_smoothing: float,
    teacher_weight: float,
    overwrite_ents: bool,
    spans_key: str,
    scorer: Optional[Callable],
) -> "BertNER":
    """Create a `bert_ner` component.

    model (Model[List[Doc], List[Floats2d]]): Tag probabilities per token; by default
        `spacy_bert_ner.TokenClassifier.v2` over a `TransformerListener` (mean-pooled word pieces)
        that listens to a `transformer` component earlier in the pipeline, plus casing features.
    scheme (str): Tag scheme, "BILUO" (default: it marks entity ends too) or "BIO".
    decoder (str): "viterbi" (default) finds the most probable *valid* tag sequence; "greedy"
        takes each token's most probable tag, for comparison.
    outside_bias (float): Subtracted from the log-probability of the 'O' tag before decoding. 0
        (default) decodes the classifier's probabilities as they are; above 0 trades precision for
        recall (on a corpus where the model misses many entities, choose it on dev).
    label_smoothing (float): Training only: the share of each gold tag's probability mass spread
        evenly over all tags in the cross-entropy target (0, the default, is plain cross-entropy;
        0.1 is the usual value elsewhere), as torch's `cross_entropy(label_smoothing=...)`.
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
        label_smoothing=label_smoothing,
        teacher_weight=teacher_weight,
        overwrite_ents=overwrite_ents,
        spans_key=spans_key,
        scorer=scorer,
    )


# The settings a BertNER takes from its config each time it is built or loaded (not saved with it).
RUN_TIME_SETTINGS = (
    "decoder",
    "outside_bias",
    "label_smoothing",
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
        label_smoothing: float = 0.0,
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
        self.label_smoothing = check_label_smoothing(label_smoothing)
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
        if self.teacher_weight and not any(
            TEACHER_KEY in eg.reference.user_data for eg in islice(get_examples(), 100)
        ):
            raise ValueError(
                f"[bert_ner] '{self.name}' has teacher_weight = {self.teacher_weight}, but the "
                "training docs carry no teacher probabilities. Make them with `python -m "
                "spacy_bert_ner distill TRAIN.spacy OUT.spacy TEACHER...` and train on OUT.spacy, "
                "or set teacher_weight = 0.0."
            )
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
        _check_upstream(self.name, self.model, docs)
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
        blank = numpy.concatenate([_blank_tokens(doc) for doc in docs])
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
        """Cross-entropy of the predicted tag probabilities against the gold tags (smoothed by
        `label_smoothing`: the target is 1 - s on the gold tag plus s / n_tags on every tag).

        Gold entities are aligned to the predicted tokenization; tokens with missing annotation (or
        whose gold entity does not align) carry no loss. With `teacher_weight` w above 0, a token
        with teacher probabilities (`distillation`) is trained towards 1 - w of its gold target
        plus w of them (w of them alone where its gold tag is missing). Returns (summed loss,
        d_scores), where d_scores is the gradient with respect to the softmax's input.
        """
        validate_examples(examples, "BertNER.get_loss")
        examples = list(examples)
        gold = self._gold_tag_ids(examples)
        if self.model.has_ref("transitions"):
            return self._crf_loss(gold, scores)
        teacher = self._teacher_targets(examples) if self.teacher_weight else None
        if teacher is not None:
            return self._target_loss(self._targets(gold, teacher), scores)
        xp = get_array_module(scores[0]) if scores else numpy
        probs = self.model.ops.flatten(scores)
        gold_ids = xp.asarray(gold, dtype="int64")
        rows = xp.nonzero(gold_ids >= 0)[0]
        smoothing = self.label_smoothing
        n_tags = probs.shape[1]
        d_probs = probs.copy()
        d_probs[rows, gold_ids[rows]] -= 1.0 - smoothing
        gold_log_probs = xp.log(xp.maximum(probs[rows, gold_ids[rows]], 1e-12))
        loss = -(1.0 - smoothing) * float(gold_log_probs.sum())
        if smoothing:
            d_probs[rows] -= smoothing / n_tags
            loss -= smoothing / n_tags * float(xp.log(xp.maximum(probs[rows], 1e-12)).sum())
        d_probs[gold_ids < 0] = 0.0
        if numpy.isnan(loss):
            raise ValueError(f"[bert_ner] NaN loss in '{self.name}': lower the learning rate.")
        lengths = self.model.ops.asarray1i([len(s) for s in scores])
        return loss, self.model.ops.unflatten(d_probs, lengths)

    def _teacher_targets(self, examples: List[Example]) -> Optional[numpy.ndarray]:
        """The teacher probabilities of each predicted token in the batch (NaN rows where there
        are none), or None when no doc of the batch carries them."""
        tags = self.tags
        rows = [teacher_rows(eg.predicted, eg.reference, tags, self.name) for eg in examples]
        if all(r is None for r in rows):
            return None
        n_tags = len(tags)
        return numpy.concatenate(
            [
                numpy.full((len(eg.predicted), n_tags), numpy.nan, dtype="float32")
                if r is None
                else r
                for eg, r in zip(examples, rows)
            ]
        )

    def _targets(self, gold: Ints1d, teacher: numpy.ndarray) -> numpy.ndarray:
        """Each token's target distribution over the tags (on the host): its (smoothed) gold
        tag, mixed with the teacher's probabilities by `teacher_weight`; all zero where neither
        is known."""
        gold_ids = to_numpy(gold).astype("int64")
        n_tags = teacher.shape[1]
        targets = numpy.zeros(teacher.shape, dtype="float32")
        rows = numpy.nonzero(gold_ids >= 0)[0]
        targets[rows, gold_ids[rows]] = 1.0 - self.label_smoothing
        targets[rows] += self.label_smoothing / n_tags
        taught = ~numpy.isnan(teacher).any(axis=1)
        weight = self.teacher_weight
        targets[taught] = (1.0 - weight) * targets[taught] + weight * teacher[taught]
        return targets

    def _target_loss(self, targets: numpy.ndarray, scores: List[Floats2d]) -> Tuple[float, Any]:
        """Cross-entropy of the tag probabilities against target distributions (rows that sum
        to at most 1): the loss -sum(t * log p) and its gradient p * sum(t) - t with respect to
        the softmax's input."""
        ops = self.model.ops
        probs = ops.flatten(scores)
        t = ops.asarray2f(cast(Floats2d, targets))
        loss = -float((t * ops.xp.log(ops.xp.maximum(probs, 1e-12))).sum())
        if numpy.isnan(loss):
            raise ValueError(f"[bert_ner] NaN loss in '{self.name}': lower the learning rate.")
        d_probs = probs * t.sum(axis=1, keepdims=True) - t
        return loss, ops.unflatten(d_probs, ops.asarray1i([len(s) for s in scores]))

    def _crf_loss(self, gold: Ints1d, scores: List[Floats2d]) -> Tuple[float, Any]:
        """`get_loss` for a model with a CRF (`TokenClassifier.v3` with `crf = true`): the CRF's
        negative log-likelihood of each doc's gold tags (`crf.crf_loss`). The transitions' own
        gradient is added to them here, as they have no input to backpropagate through."""
        for setting in ("label_smoothing", "teacher_weight"):
            if getattr(self, setting):
                raise ValueError(
                    f"[bert_ner] '{self.name}' has a CRF (crf = true), which trains on whole tag "
                    f"sequences: {setting} sets per-token targets and does not apply. Set "
                    f"{setting} = 0.0, or crf = false."
                )
        transitions = self.model.get_ref("transitions")
        probs = self.model.ops.flatten(scores)
        log_probs = self.model.ops.xp.log(self.model.ops.xp.maximum(probs, 1e-12))
        lengths = [len(s) for s in scores]
        loss, d_scores, d_transitions = crf_loss(
            log_probs,
            lengths,
            gold,
            transition_scores(transitions),
            constraints_for(self.tags, self.cfg["scheme"]),
        )
        if numpy.isnan(loss):
            raise ValueError(f"[bert_ner] NaN loss in '{self.name}': lower the learning rate.")
        add_transition_gradient(transitions, d_transitions)
        return loss, self.model.ops.unflatten(d_scores, self.model.ops.asarray1i(lengths))

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
        listed = ", ".join(f"{label} ({n})" for label, n in sorted(new.items()))
        warnings.warn(
            f"[bert_ner] '{self.name}' predicts the labels {list(self.labels)}, but gold entities "
            f"{where} have other labels: {listed}. They are trained as outside ('O'). To learn "
            "them, add them to [initialize.components.bert_ner.labels] (or leave that unset to "
            "take every label from the training data); to silence this, remove or relabel those "
            "entities in the data.",
            UserWarning,
            stacklevel=3,
        )

    def _gold_tag_ids(self, examples: List[Example]) -> Ints1d:
        """Gold tag index per predicted token across the batch; -1 marks missing annotation."""
        scheme = self.cfg["scheme"]
        tag_ids = {tag: i for i, tag in enumerate(self.tags)}
        ids: List[numpy.ndarray] = []
        misaligned = False
        unknown: Counter = Counter()
        for eg in examples:
            eg_ids, eg_misaligned = gold_tag_ids(eg, tag_ids, scheme, unknown)
            ids.append(eg_ids)
            misaligned = misaligned or eg_misaligned
        if misaligned:
            warnings.warn(MISALIGNED_WARNING, UserWarning, stacklevel=3)
        if unknown:
            self._warn_unknown_labels(unknown, "in this batch")
        flat = numpy.concatenate(ids) if ids else numpy.zeros(0, dtype="int32")
        return self.model.ops.asarray1i(cast(Ints1d, flat))


def check_teacher_weight(value: float) -> float:
    """`teacher_weight` as a float in [0, 1], or a clear error."""
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(
            f"[bert_ner] teacher_weight must be in [0, 1], got {value}: 0 trains on the gold "
            "tags alone, 0.5 on an even mix of gold tags and teacher probabilities."
        )
    return float(value)


def check_label_smoothing(value: float) -> float:
    """`label_smoothing` as a float in [0, 1), or a clear error."""
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(
            f"[bert_ner] label_smoothing must be in [0, 1), got {value}: 0 trains on the gold "
            "tags as they are, 0.1 moves a tenth of each gold tag's probability to all tags."
        )
    return float(value)


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
    ids = numpy.full(len(x), -1, dtype="int32")
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
    x_start, x_end = _char_spans(x)
    y_start, y_end = _char_spans(y)
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


def teacher_rows(
    predicted: Doc, reference: Doc, tags: Sequence[str], name: str
) -> Optional[numpy.ndarray]:
    """The teacher probabilities (`distillation`) of each predicted token, aligned by character
    offsets as `_align_by_characters` aligns the gold tags: a predicted token takes the rows of
    the reference token with its exact span, NaN rows where there is none (or the texts differ).
    None when the reference carries no teacher probabilities."""
    probs = teacher_probs(reference, tags, name)
    if probs is None:
        return None
    x_start, x_end = _char_spans(predicted)
    y_start, y_end = _char_spans(reference)
    if numpy.array_equal(x_start, y_start) and numpy.array_equal(x_end, y_end):
        return probs
    rows = numpy.full((len(predicted), len(tags)), numpy.nan, dtype="float32")
    if predicted.text != reference.text or not len(reference):
        return rows
    j = numpy.minimum(numpy.searchsorted(y_start, x_start), len(reference) - 1)
    same = (y_start[j] == x_start) & (y_end[j] == x_end)
    rows[same] = probs[j[same]]
    return rows


def _char_spans(doc: Doc) -> Tuple[numpy.ndarray, numpy.ndarray]:
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


def _blank_tokens(doc: Doc) -> numpy.ndarray:
    """Tokens that are never (part of) an entity: whitespace, as in spaCy's own `ner`, and tokens
    the transformer saw no word piece of (control characters), whose only evidence would be the
    casing features."""
    blank = doc.to_array(IS_SPACE).astype(bool)
    trf_data = doc._.trf_data if doc.has_extension("trf_data") else None
    align = getattr(trf_data, "align", None)
    if align is not None and len(align.lengths) == len(doc):
        blank |= to_numpy(align.lengths) == 0
    return blank


def _check_upstream(name: str, model: Model, docs: List[Doc]) -> None:
    """Raise if the model listens to a transformer whose output the docs lack: the listener would
    silently predict from zero vectors."""
    listeners = [node for node in model.walk() if node.name == "transformer-listener"]
    if not listeners or not Doc.has_extension("trf_data"):
        return
    if all(doc._.trf_data is not None for doc in docs if len(doc)):
        return
    upstream = getattr(listeners[0], "upstream_name", "*")
    raise ValueError(
        f"[bert_ner] '{name}' listens to a transformer component (upstream: {upstream!r}), but "
        "the docs have no transformer output (doc._.trf_data is None), so it would predict from "
        "zero vectors. Run the transformer before it: don't disable or exclude it (e.g. "
        f"`nlp.select_pipes(enable=['transformer', '{name}'])`). To use the component without a "
        "transformer component, give it its own copy of the transformer before sourcing it: "
        f'`trained_nlp.replace_listeners("transformer", "{name}", ["model.tok2vec"])`, then '
        f'`nlp.add_pipe("{name}", source=trained_nlp)` (in a config: '
        f'`replace_listeners = ["model.tok2vec"]` under [components.{name}]).'
    )
