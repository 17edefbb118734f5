"""A training logger that keeps the training curve as JSON lines, beside spaCy's console table.

spaCy's `spacy.ConsoleLogger.v3` can write JSONL too, but it keeps neither the elapsed time nor the
words seen, and it refuses to overwrite a log from an earlier run (so a retrained model would keep
the old curve). This one writes, to a file it replaces:

- a first line `{"command": ..., "config_overrides": ..., "started": ...}`: how training was run;
- one line per evaluation: `epoch`, `step`, `seconds`, `words`, `words_per_second`, `losses` (summed
  since the previous evaluation), `score` and `scores` (every dev score the scorers returned, as
  spaCy returns them: fractions, `ents_per_type` nested);
- a last line `{"finished": ..., "seconds": ...}` when training ends.

Chain it with the console logger (`spacy.ChainLogger.v1`) to keep the table on the console.
"""

import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Tuple, Union

from spacy.language import Language
from spacy.util import registry

LogStep = Callable[[Optional[Dict[str, Any]]], None]
Logger = Callable[[Language, IO, IO], Tuple[LogStep, Callable[[], None]]]


def command_line(argv: Optional[List[str]] = None) -> str:
    """The command this process runs, as it could be typed again: `python -m spacy train ...` when
    run through spaCy's CLI, after the config overrides spaCy reads from the environment."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name == "__main__.py":  # `python -m package`
        argv = ["python", "-m", Path(argv[0]).parent.name, *argv[1:]]
    command = shlex.join(argv)
    overrides = os.environ.get("SPACY_CONFIG_OVERRIDES")
    if overrides:
        command = f"SPACY_CONFIG_OVERRIDES={shlex.quote(overrides)} {command}"
    return command


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@registry.loggers("spacy_bert_ner.JSONLLogger.v1")
def make_jsonl_logger(path: Union[str, Path]) -> Logger:
    """path (Union[str, Path]): the JSONL file to write; replaced when training starts."""
    log_path = Path(path)

    def setup(
        nlp: Language, stdout: IO = sys.stdout, stderr: IO = sys.stderr
    ) -> Tuple[LogStep, Callable[[], None]]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stream = log_path.open("w", encoding="utf8")
        start = time.perf_counter()

        def write(record: Dict[str, Any]) -> None:
            stream.write(json.dumps(record) + "\n")
            stream.flush()

        write(
            {
                "command": command_line(),
                "config_overrides": os.environ.get("SPACY_CONFIG_OVERRIDES"),
                "started": _now(),
            }
        )

        def log_step(info: Optional[Dict[str, Any]]) -> None:
            if info is None:  # a step without an evaluation
                return
            seconds = time.perf_counter() - start
            write(
                {
                    "epoch": info["epoch"],
                    "step": info["step"],
                    "seconds": round(seconds, 2),
                    "words": info["words"],
                    "words_per_second": round(info["words"] / seconds, 1) if seconds else None,
                    "losses": {name: float(loss) for name, loss in info["losses"].items()},
                    "score": float(info["score"]),
                    "scores": info["other_scores"],
                }
            )

        def finalize() -> None:
            if not stream.closed:
                write({"finished": _now(), "seconds": round(time.perf_counter() - start, 2)})
                stream.close()

        return log_step, finalize

    return setup


def read_log(path: Union[str, Path]) -> Dict[str, Any]:
    """A JSONL training log as {"command", "started", "finished", "seconds", "evaluations"}:
    "evaluations" are the per-evaluation records in order; "seconds" is the whole run's time
    (from the last line, else the last evaluation), None when the log has no timing."""
    path = Path(path)
    log: Dict[str, Any] = {"command": None, "started": None, "finished": None, "seconds": None}
    evaluations = []
    with path.open(encoding="utf8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON line ({err}).") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: not a JSON object.")
            if "step" in record:
                missing = {"epoch", "losses", "scores"} - set(record)
                if missing:
                    raise ValueError(
                        f"{path}:{number}: an evaluation without {', '.join(sorted(missing))} "
                        "(is this a log of spacy_bert_ner.JSONLLogger.v1?)."
                    )
                evaluations.append(record)
                log["seconds"] = record.get("seconds", log["seconds"])
            else:
                log.update({k: v for k, v in record.items() if k in log})
    log["evaluations"] = evaluations
    return log
