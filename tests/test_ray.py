"""`annotate --engine ray` on a local Ray cluster (loopback, 2 CPUs: 2 pipeline actors with half a
CPU each, and one CPU for the reading task)."""

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from synthetic import make_sentences

from spacy_bert_ner.annotate import annotate
from spacy_bert_ner.records import AnnotateOptions

RAY = {"num_actors": 2, "cpus_per_actor": 0.5}

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 JSONL records with extra fields, one of them invalid JSON."""
    path = tmp_path_factory.mktemp("ray-input") / "in.jsonl"
    lines = [
        json.dumps({"id": i, "text": " ".join(words)})
        for i, (words, _) in enumerate(make_sentences(200, seed=7))
    ]
    lines[57] = '{"id": 57, "text": broken'
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    return path


@pytest.fixture(scope="module")
def local_output(pipeline_path: Path, source: Path, tmp_path_factory: pytest.TempPathFactory):
    output = tmp_path_factory.mktemp("local") / "out.jsonl"
    annotate(
        spacy.load(pipeline_path), source, output, AnnotateOptions(batch_size=8, on_error="skip")
    )
    return read_jsonl(output)


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


def without_scores(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [
        {**r, "entities": [{k: v for k, v in e.items() if k != "score"} for e in r["entities"]]}
        for r in records
    ]


def assert_same(records: List[Dict[str, Any]], expected: List[Dict[str, Any]]) -> None:
    assert without_scores(records) == without_scores(expected)
    scores = [e["score"] for r in records for e in r["entities"]]
    assert scores == pytest.approx([e["score"] for r in expected for e in r["entities"]], abs=1e-5)


def test_ray_output_identical_to_local_run(pipeline_path, source, local_output, tmp_path):
    from spacy_bert_ner.ray_engine import annotate_on_ray

    output = tmp_path / "ray.jsonl"
    stats = annotate_on_ray(
        str(pipeline_path), source, output, AnnotateOptions(batch_size=8, on_error="skip", **RAY)
    )
    assert [(e.line, e.reason.split(":")[0]) for e in stats.skipped] == [(58, "invalid JSON")]
    assert stats.docs == 199
    records = read_jsonl(output)
    assert [r["id"] for r in records] == [i for i in range(200) if i != 57]
    assert_same(records, local_output)


def test_killed_worker_loses_and_duplicates_nothing(pipeline_path, source, local_output, tmp_path):
    """A pipeline actor killed while it annotates a batch is restarted by Ray, which runs the
    batch again: the output still holds each record once, in order. The run's stats prove that a
    restarted actor annotated records, so the retry really happened; the driver's dropping of
    lines delivered twice is tested without Ray in test_annotate.py."""
    import psutil

    from spacy_bert_ner.ray_engine import annotate_on_ray

    killed: List[int] = []
    done = threading.Event()

    def kill_a_busy_actor() -> None:
        """Kill the first actor seen annotating a batch (Ray titles its process "...submit"
        then; an idle actor would leave Ray nothing to run again)."""
        while not done.is_set():
            for proc in psutil.process_iter(["pid", "cmdline"]):
                title = " ".join(proc.info["cmdline"] or [])
                if "RayAnnotator" in title and ".submit" in title:
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed.append(proc.info["pid"])
                    return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_busy_actor, daemon=True)
    killer.start()
    output = tmp_path / "ray.jsonl"
    try:
        stats = annotate_on_ray(
            str(pipeline_path),
            source,
            output,
            AnnotateOptions(batch_size=4, on_error="skip", **RAY),
        )
    finally:
        done.set()
        killer.join()
    assert killed, "no pipeline actor was seen annotating a batch, to kill"
    assert stats.restarted_lines > 0, "no record was annotated by a restarted actor"
    records = read_jsonl(output)
    assert [r["id"] for r in records] == [i for i in range(200) if i != 57]
    assert (stats.docs, [e.line for e in stats.skipped]) == (199, [58])
    assert_same(records, local_output)


def test_bad_record_stops_and_parquet_output(pipeline_path, source, local_output, tmp_path):
    import pyarrow.parquet

    from spacy_bert_ner.ray_engine import annotate_on_ray
    from spacy_bert_ner.records import RecordError

    with pytest.raises(RecordError, match=r"in.jsonl:58: invalid JSON"):
        annotate_on_ray(
            str(pipeline_path),
            source,
            tmp_path / "stop.jsonl",
            AnnotateOptions(batch_size=8, **RAY),
        )
    # Everything before the bad record was written, in order, and the run can resume after fixing.
    assert [r["id"] for r in read_jsonl(tmp_path / "stop.jsonl")] == list(range(57))

    output = tmp_path / "out.parquet"
    annotate_on_ray(
        str(pipeline_path),
        source,
        output,
        AnnotateOptions(output_format="parquet", on_error="skip", batch_size=8, **RAY),
    )
    table = pyarrow.parquet.read_table(output).to_pylist()
    assert [row["line"] for row in table] == [n for n in range(1, 201) if n != 58]
    assert_same([json.loads(row["record"]) for row in table], local_output)
    assert without_scores([{"entities": row["entities"]} for row in table]) == without_scores(
        [{"entities": r["entities"]} for r in local_output]
    )


def test_too_few_cpus_is_a_clear_error(pipeline_path, source, tmp_path):
    from spacy_bert_ner.ray_engine import annotate_on_ray

    with pytest.raises(ValueError, match="Lower --num-actors or --cpus-per-actor"):
        annotate_on_ray(
            str(pipeline_path), source, tmp_path / "o.jsonl", AnnotateOptions(num_actors=2)
        )


def test_records_the_pipeline_cannot_take_are_skipped(pipeline_path, tmp_path):
    """Lone surrogates and texts over nlp.max_length cost only their record, not their batch;
    an existing output needs --overwrite."""
    from spacy_bert_ner.ray_engine import annotate_on_ray
    from spacy_bert_ner.records import AnnotateError

    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": i, "text": f"john smith visited paris {i} ."}) for i in range(6)]
    lines[1] = '{"id": 1, "text": "Obama \\ud800 in Berlin."}'
    lines[4] = json.dumps({"id": 4, "text": "x " * 600_000})
    source.write_text("\n".join(lines) + "\n", encoding="utf8")
    output = tmp_path / "out.jsonl"
    output.write_text("precious\n")
    with pytest.raises(AnnotateError, match="already exists"):
        annotate_on_ray(str(pipeline_path), source, output, AnnotateOptions(on_error="skip", **RAY))
    assert output.read_text() == "precious\n"
    stats = annotate_on_ray(
        str(pipeline_path),
        source,
        output,
        AnnotateOptions(on_error="skip", overwrite=True, batch_size=2, **RAY),
    )
    assert [(e.line, e.reason.split(" ")[1]) for e in stats.skipped] == [(2, "lone"), (5, "text")]
    assert [r["id"] for r in read_jsonl(output)] == [0, 2, 3, 5]
