"""What one workflow step wrote, as a later step reads it: a JSON object (`spacy evaluate`'s scores,
`analyze`'s errors.json, a pipeline's meta.json), and training time in words. Shared by the
training report and the model card, so that both read and say them the same way."""

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
