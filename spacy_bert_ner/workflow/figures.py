"""What the training report shows, computed from the workflow's files and drawn with matplotlib
(the `workflow` extra): the training curve, P/R/F per type, the confusion matrix and the
confidences' reliability. `report.py` lays them out on the page."""

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from ..evaluation.error_kinds import NO_LABEL

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MISSED = "missed"
SPURIOUS = "spurious"


@dataclass
class ConfusionMatrix:
    """Gold types (rows, then "spurious") against predicted types (columns, then "missed").

    Each cell counts gold–prediction pairs: a correct entity on the diagonal, a type error off it,
    a missed gold entity in the last column, a spurious prediction in the last row. A boundary error
    (overlapping words, the right type) also counts on the diagonal, and is counted again in
    `boundary` per type, so a picture can tell the two apart."""

    rows: List[str]
    columns: List[str]
    counts: List[List[int]]
    boundary: Dict[str, int]

    def count(self, gold: str, pred: str) -> int:
        return self.counts[self.rows.index(gold)][self.columns.index(pred)]


def confusion_matrix(analysis: Dict[str, Any]) -> ConfusionMatrix:
    """The confusion matrix of an error analysis (`evaluation.analysis.analysis_json`): the
    correct entities per type come from its scores, the errors from its confusions."""
    per_type = analysis["scores"]["per_type"]
    labels = set(per_type)
    for confusion in analysis["confusions"]:
        labels.update({confusion["gold"], confusion["pred"]} - {NO_LABEL})
    types = sorted(labels)
    rows, columns = [*types, SPURIOUS], [*types, MISSED]
    counts = [[0] * len(columns) for _ in rows]
    boundary = {label: 0 for label in types}
    for label in types:
        counts[rows.index(label)][columns.index(label)] += per_type.get(label, {}).get("tp", 0)
    for confusion in analysis["confusions"]:
        kind, gold, pred, n = (confusion[k] for k in ("kind", "gold", "pred", "count"))
        if kind == MISSED:
            pred = MISSED
        elif kind == SPURIOUS:
            gold = SPURIOUS
        elif kind == "boundary":
            boundary[gold] += n
        counts[rows.index(gold)][columns.index(pred)] += n
    return ConfusionMatrix(rows, columns, counts, boundary)


@dataclass
class ReliabilityBin:
    """The predictions whose confidence is in [low, high) (the last bin includes 1.0)."""

    low: float
    high: float
    count: int
    mean_score: Optional[float]
    accuracy: Optional[float]


def reliability_bins(
    scores: Sequence[float], correct: Sequence[bool], n_bins: int = 10
) -> List[ReliabilityBin]:
    """Equal-width confidence bins over [0, 1], each with its number of predictions, their mean
    confidence and the fraction of them that is correct (None for an empty bin)."""
    if len(scores) != len(correct):
        raise ValueError(f"{len(scores)} scores but {len(correct)} correct/wrong flags.")
    members: List[List[Tuple[float, bool]]] = [[] for _ in range(n_bins)]
    for score, right in zip(scores, correct):
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"Confidence {score} is outside [0, 1].")
        members[min(int(score * n_bins), n_bins - 1)].append((score, bool(right)))
    bins = []
    for i, items in enumerate(members):
        n = len(items)
        bins.append(
            ReliabilityBin(
                low=i / n_bins,
                high=(i + 1) / n_bins,
                count=n,
                mean_score=sum(s for s, _ in items) / n if n else None,
                accuracy=sum(r for _, r in items) / n if n else None,
            )
        )
    return bins


def expected_calibration_error(bins: Sequence[ReliabilityBin]) -> float:
    """The mean gap between confidence and accuracy, weighted by bin size (0 = calibrated)."""
    total = sum(b.count for b in bins)
    if not total:
        return 0.0
    return (
        sum(
            b.count * abs(b.mean_score - b.accuracy)
            for b in bins
            if b.mean_score is not None and b.accuracy is not None
        )
        / total
    )


@dataclass
class Curve:
    """The training curve: per evaluation, the step, dev entity F1 (%) and each component's mean
    loss per step since the previous evaluation."""

    steps: List[int]
    f1: List[float]
    losses: Dict[str, List[float]]
    seconds: Optional[float]
    command: Optional[str]


def training_curve(log: Dict[str, Any]) -> Curve:
    """The curve of a training log (`loggers.read_log`). Components whose loss stays 0 (the
    transformer, trained through its listener) are left out."""
    evaluations = log["evaluations"]
    steps = [e["step"] for e in evaluations]
    f1 = [100 * float(e["scores"].get("ents_f") or 0.0) for e in evaluations]
    names = sorted({name for e in evaluations for name in e["losses"]})
    # spaCy sums the losses from one evaluation to the next: divide by the steps in between.
    n_steps = [max(1, step - previous) for previous, step in zip([-1, *steps], steps)]
    # The final state's evaluation (JSONLLogger.v2) has no losses: a gap, not a drop to 0.
    losses = {
        name: [
            float(e["losses"][name]) / n if name in e["losses"] else math.nan
            for e, n in zip(evaluations, n_steps)
        ]
        for name in names
    }
    losses = {
        name: values
        for name, values in losses.items()
        if any(v and not math.isnan(v) for v in values)
    }
    return Curve(steps, f1, losses, log.get("seconds"), log.get("command"))


def per_type_scores(metrics: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """P/R/F (%) per entity type and overall ("ALL") from `spacy evaluate`'s JSON output."""
    scores = {
        label: {k: 100 * float(prf[k]) for k in ("p", "r", "f")}
        for label, prf in sorted((metrics.get("ents_per_type") or {}).items())
    }
    scores["ALL"] = {k: 100 * float(metrics.get(f"ents_{k}") or 0.0) for k in ("p", "r", "f")}
    return scores


# Drawing: matplotlib's object API (no pyplot, so no global state or GUI backend).


def _figure(width: float, height: float, ncols: int = 1) -> Tuple["Figure", Any]:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            f"The report draws with matplotlib: pip install 'spacy-bert-ner[workflow]' ({err})"
        ) from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots(1, ncols)


def plot_curve(curve: Curve) -> "Figure":
    from matplotlib.ticker import MaxNLocator

    fig, (ax_f1, ax_loss) = _figure(10, 3.6, ncols=2)
    ax_f1.plot(curve.steps, curve.f1, marker="o", color="tab:blue")
    if curve.f1:
        best = max(range(len(curve.f1)), key=lambda i: curve.f1[i])
        ax_f1.annotate(
            f"best {curve.f1[best]:.2f}",
            (curve.steps[best], curve.f1[best]),
            textcoords="offset points",
            xytext=(0, -16),
            ha="center",
        )
    ax_f1.set(title="Dev entity F1", xlabel="step", ylabel="F1 (%)")
    for name, values in curve.losses.items():
        ax_loss.plot(curve.steps, values, marker="o", label=name)
    if curve.losses:
        ax_loss.legend()
    ax_loss.set(title="Training loss per step", xlabel="step", ylabel="mean since last evaluation")
    for ax in (ax_f1, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def plot_per_type(splits: Dict[str, Dict[str, Dict[str, float]]]) -> "Figure":
    fig, axes = _figure(5 * len(splits), 3.6, ncols=len(splits))
    axes = list(axes) if len(splits) > 1 else [axes]
    width = 0.27
    for ax, (split, scores) in zip(axes, splits.items()):
        labels = list(scores)
        for i, (metric, name) in enumerate((("p", "P"), ("r", "R"), ("f", "F"))):
            xs = [j + (i - 1) * width for j in range(len(labels))]
            bars = ax.bar(xs, [scores[label][metric] for label in labels], width, label=name)
            if metric == "f":
                ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        ax.set_xticks(range(len(labels)), labels)
        ax.set(title=f"{split}: P / R / F per type", ylabel="%", ylim=(0, 118))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper center", ncols=3, fontsize=8)
    return fig


def plot_confusion(matrix: ConfusionMatrix) -> "Figure":
    n_rows, n_cols = len(matrix.rows), len(matrix.columns)
    fig, ax = _figure(1.1 * n_cols + 2, 0.8 * n_rows + 1.6)
    image = ax.imshow(matrix.counts, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    peak = max((max(row) for row in matrix.counts), default=0)
    for i, row_label in enumerate(matrix.rows):
        for j, col_label in enumerate(matrix.columns):
            count = matrix.counts[i][j]
            text = str(count)
            if row_label == col_label and matrix.boundary.get(row_label):
                text += f"\n({matrix.boundary[row_label]} boundary)"
            color = "white" if count > peak / 2 else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(n_cols), matrix.columns)
    ax.set_yticks(range(n_rows), matrix.rows)
    ax.set(title="Dev: gold type (rows) vs predicted type", xlabel="predicted", ylabel="gold")
    return fig


def plot_confidence(
    scores: Sequence[float], correct: Sequence[bool], bins: Sequence[ReliabilityBin]
) -> "Figure":
    fig, (ax_hist, ax_rel) = _figure(10, 3.6, ncols=2)
    edges = [i / 20 for i in range(21)]
    right = [s for s, c in zip(scores, correct) if c]
    wrong = [s for s, c in zip(scores, correct) if not c]
    ax_hist.hist(right, bins=edges, alpha=0.6, label=f"correct ({len(right)})", color="tab:green")
    ax_hist.hist(wrong, bins=edges, alpha=0.6, label=f"wrong ({len(wrong)})", color="tab:red")
    if scores:
        ax_hist.set_yscale("log")
        ax_hist.legend(loc="upper left")
    ax_hist.set(title="Confidence of predicted entities", xlabel="score", ylabel="entities")
    filled = [b for b in bins if b.count]
    ax_rel.bar(
        [(b.low + b.high) / 2 for b in filled],
        [b.accuracy or 0.0 for b in filled],
        width=[b.high - b.low for b in filled],
        edgecolor="black",
        alpha=0.7,
        label="fraction correct",
    )
    ax_rel.plot([0, 1], [0, 1], linestyle="--", color="gray", label="calibrated")
    for b in filled:
        ax_rel.annotate(str(b.count), ((b.low + b.high) / 2, (b.accuracy or 0) + 0.01), ha="center")
    ece = 100 * expected_calibration_error(bins)
    ax_rel.set(
        title=f"Reliability (ECE {ece:.1f} points)",
        xlabel="confidence",
        ylabel="fraction correct",
        xlim=(0, 1),
        ylim=(0, 1.08),
    )
    ax_rel.legend(loc="upper left")
    return fig


def png(fig: "Figure") -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
