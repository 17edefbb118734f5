"""`annotate --engine ray` on a local Ray cluster (loopback, 2 CPUs: 2 pipeline actors with half a
CPU each, and one CPU for the reading task)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from synthetic import make_sentences
from util import descendants, survivors

from spacy_bert_ner.annotate import annotate
from spacy_bert_ner.annotate.options import AnnotateOptions

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
    from spacy_bert_ner.annotate.ray_engine import annotate_on_ray

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

    from spacy_bert_ner.annotate.ray_engine import annotate_on_ray

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

    from spacy_bert_ner.annotate.options import RecordError
    from spacy_bert_ner.annotate.ray_engine import annotate_on_ray

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
    from spacy_bert_ner.annotate.ray_engine import annotate_on_ray

    with pytest.raises(ValueError, match="Lower --num-actors or --cpus-per-actor"):
        annotate_on_ray(
            str(pipeline_path), source, tmp_path / "o.jsonl", AnnotateOptions(num_actors=2)
        )


def test_records_the_pipeline_cannot_take_are_skipped(pipeline_path, tmp_path):
    """Lone surrogates and texts over nlp.max_length cost only their record, not their batch;
    an existing output needs --overwrite."""
    from spacy_bert_ner.annotate.options import AnnotateError
    from spacy_bert_ner.annotate.ray_engine import annotate_on_ray

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


def test_truncated_gzip_keeps_what_was_decoded_like_the_local_engine(pipeline_path, tmp_path):
    """A truncated .gz gave an EOFError traceback and 0 lines on Ray: now, as locally, every line
    decoded before the damage is written, then the run stops with the line reached."""
    import gzip

    from spacy_bert_ner.annotate.options import TruncatedInputError
    from spacy_bert_ner.annotate.ray_engine import annotate_on_ray

    lines = [json.dumps({"id": i, "text": f"john smith visited paris {i} ."}) for i in range(400)]
    data = gzip.compress(("\n".join(lines) + "\n").encode("utf8"))
    source = tmp_path / "in.jsonl.gz"
    source.write_bytes(data[: len(data) // 2])
    results = {}
    for engine in ("local", "ray"):
        output = tmp_path / f"{engine}.jsonl"
        options = AnnotateOptions(batch_size=16, **(RAY if engine == "ray" else {}))
        with pytest.raises(TruncatedInputError, match=r"in.jsonl.gz:\d+: the compressed input"):
            if engine == "ray":
                annotate_on_ray(str(pipeline_path), source, output, options)
            else:
                annotate(spacy.load(pipeline_path), source, output, options)
        results[engine] = [r["id"] for r in read_jsonl(output)]
    assert results["ray"] and results["ray"] == results["local"] == list(range(len(results["ray"])))


def test_strict_json_deep_nesting_and_the_lock_on_ray(pipeline_path, tmp_path):
    """Ray keeps the local engine's promises: numbers no JSON holds, an input "entities" field
    and a 100,000-level nested record are bad records with file:line (the good lines around them
    are written), and a second run on an output in use is refused."""
    from spacy_bert_ner.annotate.options import AnnotateError
    from spacy_bert_ner.annotate.ray_engine import annotate_on_ray

    lines = [json.dumps({"id": i, "text": f"john smith visited paris {i} ."}) for i in range(6)]
    lines[1] = '{"id": 1, "text": "a", "x": 1e400}'
    lines[2] = '{"id": 2, "text": "a", "x": NaN}'
    lines[3] = '{"id": 3, "text": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    lines[4] = '{"id": 4, "text": "a", "entities": []}'
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf8")
    output = tmp_path / "out.jsonl"
    options = AnnotateOptions(on_error="skip", batch_size=2, **RAY)
    stats = annotate_on_ray(str(pipeline_path), source, output, options)
    assert [r["id"] for r in read_jsonl(output)] == [0, 5]
    assert [e.line for e in stats.skipped] == [2, 3, 4, 5]
    reasons = [e.reason for e in stats.skipped]
    assert "1e400 is out of range" in reasons[0] and "NaN is not a JSON value" in reasons[1]
    assert "nested too deeply" in reasons[2] and 'already has an "entities"' in reasons[3]
    from spacy_bert_ner.annotate.claim import OutputLock

    overwrite = AnnotateOptions(on_error="skip", batch_size=2, overwrite=True, **RAY)
    with OutputLock(output), pytest.raises(AnnotateError, match="another annotate run"):
        annotate_on_ray(str(pipeline_path), source, output, overwrite)


def test_a_pipe_is_read_whole_on_ray(pipeline_path, source, local_output, tmp_path):
    """A stream (here a process substitution, `<(cat in.jsonl)`) is read by the driver and passed
    to Ray: every record is annotated, as from the file (before: the driver's input hash consumed
    the pipe's first 64 KiB, and a Ray task cannot open the driver's pipe anyway)."""
    from spacy_bert_ner.annotate.options import AnnotateError
    from spacy_bert_ner.annotate.ray_engine import annotate_on_ray

    data = source.read_bytes()
    read_end, write_end = os.pipe()

    def feed() -> None:
        with open(write_end, "wb") as f:
            f.write(data)

    threading.Thread(target=feed, daemon=True).start()
    output = tmp_path / "ray.jsonl"
    options = AnnotateOptions(batch_size=8, on_error="skip", file_format="jsonl", **RAY)
    stats = annotate_on_ray(str(pipeline_path), Path(f"/dev/fd/{read_end}"), output, options)
    assert [(e.line, e.reason.split(":")[0]) for e in stats.skipped] == [(58, "invalid JSON")]
    assert_same(read_jsonl(output), local_output)
    resume = AnnotateOptions(resume=True, file_format="jsonl", **RAY)
    with pytest.raises(AnnotateError, match="--resume needs the input as a regular file"):
        annotate_on_ray(str(pipeline_path), Path(f"/dev/fd/{read_end}"), output, resume)


# --- `kill -9` of the annotate process ------------------------------------------------------------


def kill_annotate_on_ray(
    pipeline_path: Path, source: Path, output: Path, *args: str
) -> Dict[int, str]:
    """Start `annotate --engine ray` on 20,000 records, wait until it has written some, and
    `kill -9` it: the processes it had started by then, by pid and command line."""
    big = output.parent / "big.jsonl"
    big.write_bytes(source.read_bytes() * 100)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, "-m", "spacy_bert_ner", "annotate", str(pipeline_path), str(big)]
    command += [str(output), "--engine", "ray", "--num-actors", "1", "--cpus-per-actor", "0.5"]
    command += ["--batch-size", "8", "--on-error", "skip", *args]
    run = subprocess.Popen(
        command,
        env={**env, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not (output.exists() and output.stat().st_size > 0):
            assert run.poll() is None, run.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "annotate wrote nothing in 240 s"
            time.sleep(0.2)
        started = descendants(run.pid)
    finally:
        run.kill()
        run.wait()
        run.stderr.close()
    return started


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_a_killed_run_leaves_no_process_of_the_cluster_it_started(pipeline_path, source, tmp_path):
    """Within seconds of `kill -9` of annotate, no process of the local Ray cluster it started is
    left: not the GCS or the raylet, nor the raylet's agents, workers and actors (before: the
    DashboardAgent and RuntimeEnvAgent lived on for a minute, trying to report the raylet's death
    to the dead GCS)."""
    started = kill_annotate_on_ray(pipeline_path, source, tmp_path / "out.jsonl")
    titles = " ".join(started.values())
    for name in ("gcs_server", "raylet", "DashboardAgent", "RuntimeEnvAgent", "RayAnnotator"):
        assert name in titles, f"no {name} among the run's processes: {started}"
    assert survivors(started, 10) == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_a_killed_run_leaves_a_cluster_it_joined_running(pipeline_path, source, tmp_path):
    """annotate connected to an existing cluster (here this module's, by --ray-address) ends none
    of its processes when it is killed: only the run's own job goes, as Ray ends it."""
    cluster = {
        pid: command
        for pid, command in descendants(os.getpid()).items()
        if any(name in command for name in ("gcs_server", "raylet", "Agent"))
    }
    assert len(cluster) >= 4, cluster
    # The actors of this module's earlier runs give their CPUs back when Ray collects them:
    # the run must find the cluster's CPUs free to start its own actor.
    deadline = time.monotonic() + 120
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    address = ray.get_runtime_context().gcs_address
    started = kill_annotate_on_ray(
        pipeline_path, source, tmp_path / "out.jsonl", "--ray-address", address
    )
    assert not any("raylet" in command for command in started.values()), started
    time.sleep(5)  # more than the reaper's SIGTERM-to-SIGKILL delay
    assert survivors(cluster, 0) == cluster
    assert ray.get(ray.remote(lambda: 42).options(num_cpus=0.5).remote()) == 42
