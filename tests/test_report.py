"""The training report: its numbers on small hand-made inputs, and the page in a real browser."""

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest
from typer.testing import CliRunner

from spacy_bert_ner.cli import app
from spacy_bert_ner.loggers import read_log
from spacy_bert_ner.workflow.figures import (
    confusion_matrix,
    expected_calibration_error,
    per_type_scores,
    reliability_bins,
    training_curve,
)

CHROMIUM = Path("/usr/bin/chromium")


def prf(tp: int, n_pred: int, n_gold: int) -> Dict[str, Any]:
    return {"tp": tp, "n_pred": n_pred, "n_gold": n_gold, "p": 0.0, "r": 0.0, "f": 0.0}


# An analysis as `analyze` writes it: PER 5 right, LOC 3 right; one PER typed as ORG, one LOC
# missed twice, two spurious ORG, one PER boundary error, one LOC-as-PER boundary+type error.
ANALYSIS: Dict[str, Any] = {
    "scores": {
        **prf(8, 13, 12),
        "per_type": {"LOC": prf(3, 3, 6), "ORG": prf(0, 3, 0), "PER": prf(5, 7, 6)},
    },
    "error_kinds": {"type": 1, "boundary": 1, "boundary+type": 1, "missed": 2, "spurious": 2},
    "confusions": [
        {
            "kind": "missed",
            "gold": "LOC",
            "pred": "-",
            "count": 2,
            "examples": [
                {
                    "gold": "Paris <b>",
                    "pred": None,
                    "gold_in_context": "in [[Paris <b>]] today",
                    "pred_in_context": "in Paris <b> today",
                }
            ],
        },
        {"kind": "spurious", "gold": "-", "pred": "ORG", "count": 2, "examples": []},
        {"kind": "type", "gold": "PER", "pred": "ORG", "count": 1, "examples": []},
        {"kind": "boundary", "gold": "PER", "pred": "PER", "count": 1, "examples": []},
        {"kind": "boundary+type", "gold": "LOC", "pred": "PER", "count": 1, "examples": []},
    ],
    "entity_scores": {
        "labels": ["PER"] * 6,
        "scores": [0.05, 0.95, 0.97, 1.0, 0.55, 0.52],
        "correct": [False, True, True, False, True, False],
    },
}


def test_confusion_matrix_counts() -> None:
    matrix = confusion_matrix(ANALYSIS)
    assert matrix.rows == ["LOC", "ORG", "PER", "spurious"]
    assert matrix.columns == ["LOC", "ORG", "PER", "missed"]
    assert matrix.counts == [
        [3, 0, 1, 2],  # LOC: 3 right, 1 boundary+type as PER, 2 missed
        [0, 0, 0, 0],
        [0, 1, 6, 0],  # PER: 5 right + 1 boundary error, 1 typed as ORG
        [0, 2, 0, 0],  # 2 spurious ORG
    ]
    assert matrix.boundary == {"LOC": 0, "ORG": 0, "PER": 1}
    assert matrix.count("spurious", "ORG") == 2


def test_reliability_bins() -> None:
    scores = ANALYSIS["entity_scores"]["scores"]
    bins = reliability_bins(scores, ANALYSIS["entity_scores"]["correct"], n_bins=4)
    assert [(b.low, b.high, b.count) for b in bins] == [
        (0.0, 0.25, 1),
        (0.25, 0.5, 0),
        (0.5, 0.75, 2),
        (0.75, 1.0, 3),  # 1.0 falls in the last bin
    ]
    assert bins[0].accuracy == 0.0 and bins[0].mean_score == pytest.approx(0.05)
    assert bins[1].accuracy is None and bins[1].mean_score is None
    assert bins[2].accuracy == 0.5 and bins[2].mean_score == pytest.approx(0.535)
    assert bins[3].accuracy == pytest.approx(2 / 3)
    # |0.05 - 0| * 1 + |0.535 - 0.5| * 2 + |0.973 - 0.667| * 3, over 6
    expected = (0.05 + 2 * 0.035 + 3 * abs((0.95 + 0.97 + 1.0) / 3 - 2 / 3)) / 6
    assert expected_calibration_error(bins) == pytest.approx(expected)
    assert expected_calibration_error(reliability_bins([], [])) == 0.0
    with pytest.raises(ValueError, match="outside"):
        reliability_bins([1.5], [True])
    with pytest.raises(ValueError, match="2 scores but 1"):
        reliability_bins([0.1, 0.2], [True])


def write_inputs(directory: Path) -> Dict[str, Path]:
    """A training log, dev/test scores as `spacy evaluate` writes them, and the analysis."""
    directory.mkdir(parents=True, exist_ok=True)
    log = [
        {"command": "python -m spacy train configs/bert_ner.cfg", "started": "2026-01-01T00:00"},
        *(
            {
                "epoch": step // 20,
                "step": step,
                "seconds": 30.0 * step,
                "words": 500 * step,
                "losses": {"transformer": 0.0, "bert_ner": 100.0 / (step + 1)},
                "score": f,
                "scores": {"ents_f": f, "ents_p": f, "ents_r": f},
            }
            for step, f in [(0, 0.0), (20, 0.5), (40, 0.8), (60, 0.75)]
        ),
        {"finished": "2026-01-01T00:31", "seconds": 1860.0},
    ]
    paths = {name: directory / name for name in ("log.jsonl", "dev.json", "test.json")}
    paths["log.jsonl"].write_text("".join(json.dumps(line) + "\n" for line in log))
    for name, f in (("dev.json", 0.8), ("test.json", 0.7)):
        per_type = {"LOC": {"p": f, "r": f - 0.1, "f": f - 0.05}, "PER": {"p": 1.0, "r": f, "f": f}}
        scores = {"ents_p": f, "ents_r": f, "ents_f": f, "ents_per_type": per_type, "speed": 2900.5}
        paths[name].write_text(json.dumps(scores))
    errors = directory / "errors"
    errors.mkdir()
    paths["errors.json"] = errors / "errors.json"
    paths["errors.json"].write_text(json.dumps(ANALYSIS))
    (errors / "errors.html").write_text("<!DOCTYPE html><html><body>errors</body></html>")
    return paths


def test_curve_and_per_type_scores(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path)
    curve = training_curve(read_log(paths["log.jsonl"]))
    assert curve.steps == [0, 20, 40, 60]
    assert curve.f1 == [0.0, 50.0, 80.0, 75.0]
    assert list(curve.losses) == ["bert_ner"]  # the transformer's loss stays 0: left out
    # Mean loss per step: spaCy sums it over the 20 steps since the previous evaluation.
    assert curve.losses["bert_ner"][:2] == pytest.approx([100.0, 100 / 21 / 20])
    assert curve.seconds == 1860.0
    scores = per_type_scores(json.loads(paths["test.json"].read_text()))
    assert list(scores) == ["LOC", "PER", "ALL"]
    assert scores["LOC"] == pytest.approx({"p": 70.0, "r": 60.0, "f": 65.0})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the hand-made inputs, written through the CLI."""
    directory = tmp_path_factory.mktemp("report")
    paths = write_inputs(directory)
    output = directory / "report.html"
    args = ["report", *(str(paths[n]) for n in ("log.jsonl", "dev.json", "test.json"))]
    result = CliRunner().invoke(app, [*args, str(paths["errors.json"]), str(output)])
    assert result.exit_code == 0, result.output
    return output


def test_report_page_embeds_its_figures(report: Path) -> None:
    page = report.read_text()
    images = re.findall(r"<img id='(\w+)' src='data:image/png;base64,([^']+)'", page)
    assert [name for name, _ in images] == ["curve", "per_type", "confusion", "confidence"]
    for name, _ in images:  # each PNG is also written beside the page
        assert (report.parent / "report" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "src='http" not in page and "<script" not in page  # self-contained, nothing to run
    assert "<a href='errors/errors.html'>" in page
    assert "python -m spacy train configs/bert_ner.cfg" in page
    assert "31 min" in page  # training time from the log
    assert "the checkpoint after update 41, dev F1 80.00" in page  # model-best
    assert "in [[Paris &lt;b&gt;]] today" in page  # examples escaped
    assert "2,900 words/s" in page or "2,901 words/s" in page


def test_report_cli_names_bad_inputs(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path)
    paths["log.jsonl"].write_text("{}\n{oops\n")
    args = [str(paths[n]) for n in ("log.jsonl", "dev.json", "test.json", "errors.json")]
    result = CliRunner().invoke(app, ["report", *args, str(tmp_path / "r.html")])
    assert result.exit_code == 1
    assert "log.jsonl:2: not a JSON line" in result.output
    paths["log.jsonl"].write_text('{"step": 0, "seconds": 1}\n')
    result = CliRunner().invoke(app, ["report", *args, str(tmp_path / "r.html")])
    assert "log.jsonl:1: an evaluation without epoch, losses, scores" in result.output
    write_inputs(tmp_path / "good")
    paths["errors.json"].write_text('{"scores": {}}')
    args[0] = str(tmp_path / "good" / "log.jsonl")
    result = CliRunner().invoke(app, ["report", *args, str(tmp_path / "r.html")])
    assert result.exit_code == 1
    assert "errors.json: no error_kinds, confusions; expected the errors.json of" in result.output


# Loaded before the page's own content: records script errors, console errors and failed
# resources, and once the page has loaded, whether each image decoded, into the DOM.
PROBE = """<script>
window.__problems = [];
window.addEventListener('error', function (e) {
  var what = e.message || (e.target && (e.target.src || e.target.href)) || '?';
  window.__problems.push('error: ' + String(what).slice(0, 80));
}, true);
var consoleError = console.error;
console.error = function () {
  window.__problems.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
  consoleError.apply(console, arguments);
};
window.addEventListener('load', function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {id: img.id, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight};
  });
  var out = document.createElement('pre');
  out.id = '__probe';
  out.textContent = JSON.stringify({problems: window.__problems, images: images,
    resources: performance.getEntriesByType('resource').length, title: document.title});
  document.body.appendChild(out);
});
</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",  # tests may run as root, in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    probed = report.parent / "probed.html"
    probed.write_text(report.read_text().replace("<head>", "<head>" + PROBE, 1))
    result = chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"<pre id=\"__probe\">(.*?)</pre>", result.stdout, re.S)
    assert match, f"the page did not finish loading:\n{result.stdout[-2000:]}"
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["title"] == "bert_ner training report"
    assert probe["problems"] == []
    assert probe["resources"] == 0  # nothing fetched: the page is self-contained
    assert [image["id"] for image in probe["images"]] == [
        "curve",
        "per_type",
        "confusion",
        "confidence",
    ]
    for image in probe["images"]:
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image
    # Console messages Chromium logged at error level (none expected).
    console_errors = [
        line for line in result.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line
    ]
    assert console_errors == []
