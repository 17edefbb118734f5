"""The training report: one self-contained HTML page with pictures of how training went.

It reads what the workflow already wrote: the training log (`loggers.JSONLLogger`), the scores of
`spacy evaluate` on dev and test, and the errors.json of `analyze` (`evaluation.analysis`),
and draws with matplotlib (the `workflow` extra):

- dev F1 and training loss over the steps;
- P/R/F per entity type on dev and test;
- the entity-type confusion matrix on dev, with "missed" and "spurious";
- how far the entities' confidences (`attrs["scores"]`) can be trusted: their distribution for
  correct and wrong entities, and a reliability diagram;
- the most frequent confusions with an example each, linking the displaCy page of the errors.

The PNGs are written beside the page and embedded in it as data URIs, so the page is one file.
"""

import base64
import html
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from ..evaluation.error_kinds import ERROR_KIND_HELP
from ..loggers import read_log
from .figures import (
    confusion_matrix,
    expected_calibration_error,
    per_type_scores,
    plot_confidence,
    plot_confusion,
    plot_curve,
    plot_per_type,
    png,
    reliability_bins,
    training_curve,
)
from .files import best_evaluation, describe_training, read_json_object


def _img(name: str, data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f"<img id='{name}' src='data:image/png;base64,{encoded}' alt='{html.escape(alt)}'>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px}img{max-width:100%;display:block;"
    "margin:1em 0}table{border-collapse:collapse;margin:1em 0}td,th{padding:2px 10px;"
    "border-bottom:1px solid #ddd;text-align:left}code{background:#f4f4f4;padding:1px 4px;"
    "word-break:break-all}.ctx{font-size:90%}"
)


def build_report(
    log_path: Union[str, Path],
    dev_path: Union[str, Path],
    test_path: Union[str, Path],
    analysis_path: Union[str, Path],
    output_path: Union[str, Path],
    errors_page: Optional[Union[str, Path]] = None,
    title: str = "bert_ner training report",
    n_confusions: int = 10,
) -> Dict[str, Path]:
    """Write the report page to `output_path` and its PNGs into the folder of the same name
    without the suffix (`metrics/report.html` → `metrics/report/*.png`); returns the files written.
    `errors_page` (the analysis' displaCy page) is linked relative to the report."""
    output_path = Path(output_path)
    log = read_log(log_path)
    scores = "the scores `spacy evaluate` writes with --output"
    dev = read_json_object(dev_path, scores, keys=("ents_f",))
    test = read_json_object(test_path, scores, keys=("ents_f",))
    analysis = read_json_object(
        analysis_path,
        "the errors.json of `python -m spacy_bert_ner analyze`",
        keys=("scores", "error_kinds", "confusions"),
    )
    curve = training_curve(log)
    matrix = confusion_matrix(analysis)
    entity_scores = analysis.get("entity_scores") or {"scores": [], "correct": []}
    confidences, correct = entity_scores["scores"], entity_scores["correct"]
    bins = reliability_bins(confidences, correct)

    figures = {
        "curve": (plot_curve(curve), "dev F1 and training loss over steps"),
        "per_type": (
            plot_per_type({"dev": per_type_scores(dev), "test": per_type_scores(test)}),
            "precision, recall and F1 per entity type on dev and test",
        ),
        "confusion": (plot_confusion(matrix), "confusion matrix of entity types on dev"),
        "confidence": (
            plot_confidence(confidences, correct, bins),
            "confidence of correct and wrong entities, and reliability diagram",
        ),
    }
    figure_dir = output_path.with_suffix("")
    figure_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    images = {}
    for name, (fig, alt) in figures.items():
        data = png(fig)
        (figure_dir / f"{name}.png").write_bytes(data)
        written[name] = figure_dir / f"{name}.png"
        images[name] = _img(name, data, alt)

    summary = [
        ("dev entity F1 (best model)", f"{100 * float(dev.get('ents_f') or 0):.2f}"),
        ("test entity F1", f"{100 * float(test.get('ents_f') or 0):.2f}"),
        (
            "test P / R",
            f"{100 * float(test.get('ents_p') or 0):.2f} / "
            f"{100 * float(test.get('ents_r') or 0):.2f}",
        ),
        ("evaluate speed (test)", f"{float(test.get('speed') or 0):,.0f} words/s"),
        ("training", describe_training(log)),
    ]
    best_eval = best_evaluation(log)
    if best_eval is not None:
        summary.append(
            (
                "the trained pipeline (model-best)",
                f"the checkpoint after update {best_eval['step'] + 1:,}, dev F1 "
                f"{100 * float(best_eval['scores'].get('ents_f') or 0):.2f} during training",
            )
        )
    if confidences:
        ece = 100 * expected_calibration_error(bins)
        summary.append(("calibration error of the confidences (ECE)", f"{ece:.1f} points"))
    type_rows = [
        (label, *(f"{s[k]:.2f}" for k in "prf"), *(f"{t[k]:.2f}" for k in "prf"))
        for label, s in per_type_scores(dev).items()
        for t in [per_type_scores(test).get(label, {"p": 0.0, "r": 0.0, "f": 0.0})]
    ]
    kind_rows = [
        (kind, ERROR_KIND_HELP.get(kind, ""), count)
        for kind, count in analysis["error_kinds"].items()
    ]
    confusion_rows = []
    for confusion in analysis["confusions"][:n_confusions]:
        example = (confusion.get("examples") or [{}])[0]
        confusion_rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(confusion[k]))}</td>"
                for k in ("kind", "gold", "pred", "count")
            )
            + f"<td class='ctx'>gold: {html.escape(example.get('gold_in_context') or '—')}<br>"
            f"predicted: {html.escape(example.get('pred_in_context') or '—')}</td></tr>"
        )
    link = ""
    if errors_page is not None:
        href = Path(os.path.relpath(Path(errors_page), output_path.parent)).as_posix()
        link = (
            f"<p>Every sentence with an error, gold above predicted: "
            f"<a href='{html.escape(href)}'>the displaCy page of the errors</a>.</p>"
        )
    command = (
        f"<p>Trained with <code>{html.escape(curve.command)}</code></p>" if curve.command else ""
    )
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{command}"
        + _table(("", ""), summary)
        + "<h2>Training curve</h2>"
        + images["curve"]
        + "<h2>Scores per type</h2>"
        + images["per_type"]
        + _table(("type", "dev P", "dev R", "dev F", "test P", "test R", "test F"), type_rows)
        + "<h2>Confusions on dev</h2>"
        + "<p>Each cell counts gold–prediction pairs: correct entities (and boundary errors, "
        "which overlap a gold entity of the same type) on the diagonal, type errors off it, "
        "missed gold entities in the last column and spurious predictions in the last row.</p>"
        + images["confusion"]
        + _table(("error", "meaning", "count"), kind_rows)
        + f"<h3>The {len(confusion_rows)} most frequent confusions</h3>{link}"
        + "<table><tr><th>error</th><th>gold</th><th>predicted</th><th>count</th>"
        "<th>example ([[entity]] in context)</th></tr>"
        + "".join(confusion_rows)
        + "</table><h2>How far the confidences can be trusted</h2>"
        + "<p>Each predicted entity's score in <code>doc.spans[spans_key].attrs['scores']</code>"
        " on dev: left, how the scores of correct and wrong entities are distributed; right, the "
        "fraction of entities that are correct in each score bin (bars on the diagonal: the "
        "score is the probability of being right; the numbers are entities per bin).</p>"
        + (images["confidence"] if confidences else "<p>No confidences in the analysis.</p>")
        + "</body></html>"
    )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(page, encoding="utf8")
    written["html"] = output_path
    return written
