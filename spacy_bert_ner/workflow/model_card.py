"""The packaged pipeline's model card: its meta.json, from which `spacy package` writes the README.

spaCy's README generator (`spacy.cli.package.generate_readme`) shows `description`, a table with
`sources`, the labels, the scalar scores of `performance`, and then `notes` as Markdown. The card
fills them from what the workflow measured: the trained pipeline's config and meta, the test
scores of `spacy evaluate`, and the training log (`loggers.JSONLLogger`).
"""

import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional

from spacy.util import load_config

from .. import __version__
from ..encoders import resolve_encoder
from ..loggers import read_log
from .files import best_evaluation, describe_training, read_json_object
from .packaging import code_wheel_name

HUB_URL = "https://huggingface.co/{}"


def encoder_lowercases(name: str) -> Optional[bool]:
    """Whether the encoder's tokenizer lowercases its input, from its `tokenizer_config.json`
    where a local copy exists (None when that cannot be told offline)."""
    config_path = Path(resolve_encoder(name)) / "tokenizer_config.json"
    if not config_path.exists():
        return None
    lowercase = json.loads(config_path.read_text(encoding="utf8")).get("do_lower_case")
    return None if lowercase is None else bool(lowercase)


def describe_device(gpu_id: int) -> str:
    """The device `spacy evaluate` ran on, in words: the GPU's name, or the CPU and its threads."""
    import torch

    if gpu_id >= 0 and torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(gpu_id)}"
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}, {os.cpu_count()} cores, torch threads: {torch.get_num_threads()})"


def _pct(value: Any) -> str:
    return f"{100 * float(value):.2f}"


def package_meta(
    model_path: Path,
    metrics_path: Path,
    *,
    name: str,
    version: str,
    data: Dict[str, str],
    gpu_id: int = -1,
    train_log_path: Optional[Path] = None,
    dev_metrics_path: Optional[Path] = None,
) -> Dict[str, Any]:
    """`model_card_meta` from the files the workflow wrote: the trained pipeline, the test scores
    (`spacy evaluate --output`), and optionally the training log and the dev scores. Raises
    ValueError or FileNotFoundError, naming the file, for an input that cannot be read."""
    train_log = read_log(train_log_path) if train_log_path else {}
    dev_scores = read_json_object(dev_metrics_path, "the dev scores") if dev_metrics_path else None
    return model_card_meta(
        model_path,
        read_json_object(metrics_path, "the evaluation scores"),
        train_log,
        name=name,
        version=version,
        data=data,
        device=describe_device(gpu_id),
        dev_scores=dev_scores,
    )


def model_card_meta(
    model_path: Path,
    test_scores: Dict[str, Any],
    train_log: Dict[str, Any],
    *,
    name: str,
    version: str,
    data: Dict[str, str],
    device: str,
    dev_scores: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The trained pipeline's meta.json with its model card: `performance` (the test scores, as
    before), `description`, `sources` and `notes` (encoder, data, labels, per-type test scores,
    speed, training time and command, intended use and limits).

    model_path (Path): the trained pipeline (its meta.json and config.cfg are read).
    test_scores (Dict): `spacy evaluate`'s JSON on the test set.
    train_log (Dict): `loggers.read_log` of the training log.
    data (Dict[str, str]): split name → the annotated file it was converted from.
    device (str): what `spacy evaluate` ran on, for the speed (`describe_device`).
    dev_scores (Dict): `spacy evaluate`'s JSON on dev, if there is one.
    """
    # A folder is this machine's: the card names the file.
    data = {split: Path(path).name for split, path in data.items()}
    meta = read_json_object(model_path / "meta.json", "the pipeline's meta.json")
    if not (model_path / "config.cfg").is_file():
        raise FileNotFoundError(
            f"{model_path / 'config.cfg'}: missing; expected a trained pipeline."
        )
    config = load_config(model_path / "config.cfg", interpolate=False)
    encoder = str(config["components"]["transformer"]["model"]["name"])
    component = config["components"].get("bert_ner", {})
    # An empty [model.features] section (as in configs/bert_ner.cfg) means the default features;
    # `features = null`, or a model without the slot (TokenClassifier.v1), means none.
    has_features = component.get("model", {}).get("features") is not None
    scheme = component.get("scheme", "BIO")
    labels: List[str] = list(meta.get("labels", {}).get("bert_ner", []))
    lowercases = encoder_lowercases(encoder)

    meta.update(name=name, version=version)
    performance = meta.get("performance")
    meta["performance"] = {**(performance if isinstance(performance, dict) else {}), **test_scores}
    is_hub_name = not Path(encoder).exists() and encoder.count("/") <= 1
    encoder_source: Dict[str, str] = {"name": f"encoder: {encoder}"}
    if is_hub_name:
        encoder_source["url"] = HUB_URL.format(encoder)
    meta["sources"] = [encoder_source] + [
        {"name": f"{split} data: {path}"} for split, path in data.items()
    ]
    cased = {True: "uncased", False: "cased", None: ""}[lowercases]
    meta["description"] = (
        f"Named-entity recognition ({', '.join(labels) or 'no labels'}) by token classification: "
        f"the {cased + ' ' if cased else ''}transformer encoder `{encoder}`, fine-tuned with the "
        f"`bert_ner` spaCy component ({scheme} tags, constrained Viterbi decoding"
        f"{', casing features' if has_features else ''}), on {data.get('train', 'the train data')}."
        f" Test entity F1 {_pct(test_scores.get('ents_f', 0))}."
    )
    meta["notes"] = _notes(
        encoder=encoder,
        lowercases=lowercases,
        has_features=has_features,
        scheme=scheme,
        labels=labels,
        data=data,
        test_scores=test_scores,
        dev_scores=dev_scores,
        train_log=train_log,
        device=device,
    )
    return meta


def _notes(
    *,
    encoder: str,
    lowercases: Optional[bool],
    has_features: bool,
    scheme: str,
    labels: List[str],
    data: Dict[str, str],
    test_scores: Dict[str, Any],
    dev_scores: Optional[Dict[str, Any]],
    train_log: Dict[str, Any],
    device: str,
) -> str:
    lines = ["### Model", ""]
    lines.append(
        f"- Encoder: `{encoder}`"
        + {True: " (uncased: it lowercases its input)", False: " (cased)", None: ""}[lowercases]
    )
    lines.append(
        f"- Head: a softmax over {scheme} tags per token (word pieces mean-pooled), decoded to the "
        "most probable valid tag sequence; entities on `doc.ents`, and in `doc.spans` with one "
        'confidence each in `attrs["scores"]`'
    )
    if has_features:
        lines.append(
            "- Casing features: hash embeddings of each token's shape, prefix and suffix, with its "
            "neighbours', concatenated to the encoder's vectors"
        )
    lines.append(f"- Labels: {', '.join(f'`{label}`' for label in labels)}")
    lines.append(
        f"- Code: the `bert_ner` component of spacy-bert-ner {__version__}, from the wheel "
        f"`{code_wheel_name()}` built beside this pipeline's (an installed spacy-bert-ner is "
        "used as it is, with a warning if its version differs)"
    )
    lines += ["", "### Data", ""]
    lines += [f"- {split}: `{path}`" for split, path in data.items()]

    lines += ["", "### Test scores per type", "", "| type | P | R | F |", "|---|---|---|---|"]
    for label, prf in sorted((test_scores.get("ents_per_type") or {}).items()):
        lines.append(f"| {label} | {_pct(prf['p'])} | {_pct(prf['r'])} | {_pct(prf['f'])} |")
    lines.append(
        f"| **all** | {_pct(test_scores.get('ents_p', 0))} | {_pct(test_scores.get('ents_r', 0))} "
        f"| {_pct(test_scores.get('ents_f', 0))} |"
    )
    if dev_scores is not None:
        lines += ["", f"Dev entity F1: {_pct(dev_scores.get('ents_f', 0))}."]

    lines += ["", "### Speed", ""]
    speed = test_scores.get("speed")
    if speed:
        lines.append(f"{float(speed):,.0f} words/s (`spacy evaluate` on the test set, {device}).")
    else:
        lines.append("Not measured.")

    lines += ["", "### Training", ""]
    if train_log:
        best = best_evaluation(train_log)
        lines.append(
            describe_training(train_log)
            + (f", from {train_log['started']}" if train_log.get("started") else "")
            + (
                f"; this pipeline is the checkpoint after update {best['step'] + 1:,}, dev "
                f"entity F1 {_pct(best['scores'].get('ents_f', 0))} during training."
                if best
                else "."
            )
        )
    if train_log.get("command"):
        lines += ["", "Trained with:", "", "```bash", train_log["command"], "```"]

    lines += ["", "### Intended use", ""]
    lines.append(
        f"Tagging {', '.join(labels)} entities in English text like the training data "
        "(news, when trained on CoNLL-2003), e.g. to index or link names in documents; "
        "the scores let a caller keep only confident entities."
    )
    lines += ["", "### Known limits", ""]
    if lowercases is not False:
        lines.append(
            "- The encoder is uncased: capitalisation, a strong cue for names, reaches the model "
            + (
                "only through the casing features."
                if has_features
                else "not at all (this pipeline has no casing features)."
            )
        )
    lines += [
        '- No nested or overlapping entities: one tag per token, so "Bank of England" cannot '
        'also hold the location "England".',
        f"- Trained on {data.get('train', 'its train data')} only: expect lower accuracy on text "
        "unlike it (other domains, such as social media or biomedical text, other languages) "
        "and on other entity schemes.",
        "- The confidences are the mean probability of an entity's tags: useful for ranking, not "
        "calibrated probabilities (see the training report's reliability diagram).",
    ]
    return "\n".join(lines) + "\n"
