"""What one workflow step wrote, as a later step reads it: a JSON object (`spacy evaluate`'s scores,
`analyze`'s errors.json, a pipeline's meta.json), and the training run and its time in words.
Shared by the training report and the model card, so that both read and say them the same way."""

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import srsly


def read_json_object(path: Union[str, Path], what: str, keys: Sequence[str] = ()) -> Dict[str, Any]:
    """The JSON object in `path`, which must have `keys`. Raises FileNotFoundError or ValueError
    with one line that names the file and `what` it should be (e.g. "the dev scores")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; expected {what} there.")
    try:
        data = srsly.read_json(path)
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); expected {what}.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected {what} as a JSON object, not {type(data).__name__}.")
    missing = [key for key in keys if key not in data]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)}; expected {what}.")
    return data


def format_duration(seconds: Optional[float]) -> str:
    """A duration as a person says it: "45 s", "31 min", "1 h 2 min" ("unknown" for None)."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def describe_training(log: Dict[str, Any]) -> str:
    """A training run (`loggers.read_log`) in words: "180 updates in 3 epochs (max_epochs),
    11 dev evaluations, 4 min". A log without the run's last line (JSONLLogger.v1, or a run that
    did not complete) gives what its evaluations show, as a lower bound."""
    evaluations = log.get("evaluations") or []
    n_evals = f"{len(evaluations)} dev evaluation{'s' if len(evaluations) != 1 else ''}"
    duration = format_duration(log.get("seconds"))
    if log.get("updates") is not None:
        epochs = log["epochs"]
        epochs_text = f"{epochs:g} epoch{'s' if epochs != 1 else ''}"
        return (
            f"{log['updates']:,} updates in {epochs_text} (stopped by {log['stopped_by']}), "
            f"{n_evals}, {duration}"
        )
    if not evaluations:
        return f"no evaluation logged, {duration}"
    last = evaluations[-1]
    return (
        f"at least {last['step'] + 1:,} updates in {last['epoch'] + 1} epochs (the log ends at "
        f"its last evaluation), {n_evals}, {duration}"
    )


def best_evaluation(log: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The evaluation of `model-best` in a training log: the one at the logged `best_step`, else
    the best after update 0 (the latest of equal scores, as spaCy keeps); None without any."""
    evaluations = log.get("evaluations") or []
    if log.get("best_step") is not None:
        for evaluation in evaluations:
            if evaluation["step"] == log["best_step"]:
                return evaluation
    trained = [e for e in evaluations if e["step"] > 0] or evaluations
    if not trained:
        return None
    return max(reversed(trained), key=lambda e: float(e.get("score") or 0.0))
