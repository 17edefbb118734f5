"""`annotate` (local engine) where the world is unkind: a second run on the same output, input from
a pipe, an input edited before `--resume`, a killed parent with forked workers, the OS refusing to
read or write, numbers no JSON holds, fields that collide with the output's, and deep nesting; and
a fuzz test of pipes, concurrent runs and failing writes. Their Ray counterparts are in
test_ray.py."""

import errno
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spacy.language import Language
from typer.testing import CliRunner
from util import alive

from spacy_bert_ner.annotate import annotate
from spacy_bert_ner.annotate.options import AnnotateError, AnnotateOptions, RecordError
from spacy_bert_ner.cli import app

TEXTS = [
    "john smith works for acme corp in paris .",
    "the weather was fine and nothing happened .",
    "yesterday ahmed khan visited new york with peter .",
]


@pytest.fixture(scope="module")
def nlp(pipeline_path: Path) -> Language:
    return spacy.load(pipeline_path)


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def jsonl_lines(n: int) -> List[str]:
    return [json.dumps({"id": i, "text": f"{TEXTS[i % 3]} {i}"}) for i in range(n)]


def write_lines(path: Path, lines: List[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    return path


def strict_loads(line: str) -> Dict[str, Any]:
    """json.loads as RFC 8259 reads it: NaN and Infinity are no JSON."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    return [strict_loads(line) for line in path.read_text(encoding="utf8").split("\n")[:-1]]


def ids(path: Path) -> List[int]:
    return [r["id"] for r in read_jsonl(path)]


def run_cli(*args: Any, **kwargs: Any) -> "subprocess.Popen[str]":
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "spacy_bert_ner", "annotate", *map(str, args)]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
    )


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# --- 1. One writer per output, 2. streams (a FIFO, /dev/stdin) ---------------------------------


def test_second_run_on_an_output_is_refused_and_a_fifo_is_read_whole(pipeline_path, tmp_path):
    """A run reading a FIFO holds its output while it waits for data: a second run on the same
    output (another input, even --overwrite) is refused at once, naming the first; the first then
    reads the FIFO whole. (Before: the second run wrote into the same file, and the first lost the
    FIFO's first 64 KiB to the input hash.)"""
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    output = tmp_path / "out.jsonl"
    first = run_cli(pipeline_path, fifo, output, "--format", "jsonl")
    try:
        wait_for(lambda: (tmp_path / "out.jsonl.lock").exists(), 120, "the first run's lock")
        other = write_lines(tmp_path / "other.jsonl", jsonl_lines(3))
        for extra in ([], ["--overwrite"]):
            result = invoke("annotate", pipeline_path, other, output, *extra)
            assert result.exit_code == 1, result.output
            assert "is being written by another annotate run (pid " in result.output
            assert str(first.pid) in result.output and "Traceback" not in result.output
        lines = jsonl_lines(1500)  # ~90 KB: more than a pipe's buffer and the old 64 KiB hash
        with open(fifo, "w", encoding="utf8") as f:
            f.write("\n".join(lines) + "\n")
        out, _ = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, out
    assert ids(output) == list(range(1500))
    assert not (tmp_path / "out.jsonl.lock").exists()
    # The lock is gone with the run: the next one goes ahead.
    result = invoke("annotate", pipeline_path, other, output, "--overwrite")
    assert result.exit_code == 0, result.output


def test_stdin_pipe_is_read_whole(pipeline_path, tmp_path):
    """`cat f | annotate M /dev/stdin out` annotates every line (before: 454 of 1,000)."""
    source = write_lines(tmp_path / "in.jsonl", jsonl_lines(1000))
    output = tmp_path / "out.jsonl"
    with open(source, "rb") as f:
        cat = subprocess.Popen(["cat"], stdin=f, stdout=subprocess.PIPE)
        run = run_cli(pipeline_path, "/dev/stdin", output, "--format", "jsonl", stdin=cat.stdout)
        assert cat.stdout is not None
        cat.stdout.close()
        out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    assert ids(output) == list(range(1000))


def pipe_path(data: bytes) -> Path:
    """A process substitution, `<(cat f)`: a /dev/fd path to a pipe a thread writes `data` into."""
    read_end, write_end = os.pipe()

    def feed() -> None:
        with open(write_end, "wb") as f:
            f.write(data)

    threading.Thread(target=feed, daemon=True).start()
    return Path(f"/dev/fd/{read_end}")


def test_process_substitution_and_gzip_from_a_pipe(nlp, tmp_path):
    lines = jsonl_lines(1200)
    data = ("\n".join(lines) + "\n").encode("utf8")
    for name, payload in (("plain", data), ("gzip", gzip.compress(data))):
        output = tmp_path / f"{name}.jsonl"
        stats = annotate(
            nlp, pipe_path(payload), output, AnnotateOptions(file_format="jsonl", batch_size=64)
        )
        assert stats.docs == 1200 and ids(output) == list(range(1200)), name


def test_resume_needs_a_regular_file(nlp, tmp_path):
    output = tmp_path / "out.jsonl"
    data = ("\n".join(jsonl_lines(5)) + "\n").encode("utf8")
    annotate(nlp, pipe_path(data), output, AnnotateOptions(file_format="jsonl"))
    assert ids(output) == list(range(5))
    with pytest.raises(AnnotateError, match="--resume needs the input as a regular file"):
        annotate(nlp, pipe_path(data), output, AnnotateOptions(file_format="jsonl", resume=True))
    source = write_lines(tmp_path / "in.jsonl", jsonl_lines(5))
    with pytest.raises(AnnotateError, match="was written from the stream"):
        annotate(nlp, source, output, AnnotateOptions(resume=True))


def test_resume_catches_any_edit_and_another_path(nlp, tmp_path):
    """The progress record holds a hash of the whole input and its path: an edit past the first
    64 KiB (same size), or the same bytes under another name, is refused (before: accepted, and
    the output kept the stale records)."""
    lines = jsonl_lines(1200)
    source = write_lines(tmp_path / "in.jsonl", lines)
    assert source.stat().st_size > 70_000
    output = tmp_path / "out.jsonl"
    annotate(nlp, source, output, AnnotateOptions(batch_size=256))
    complete = output.read_bytes()
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(source.read_bytes())
    with pytest.raises(AnnotateError, match="was written for the input .*in.jsonl, not"):
        annotate(nlp, copy, output, AnnotateOptions(resume=True))
    edited = lines[:-1] + [lines[-1].replace("1199", "1198")]
    write_lines(source, edited)
    assert source.stat().st_size == copy.stat().st_size
    with pytest.raises(AnnotateError, match="differs from it now .* edited or replaced"):
        annotate(nlp, source, output, AnnotateOptions(resume=True))
    assert output.read_bytes() == complete


# --- 3. Forked workers die with their parent ----------------------------------------------------


def children(pid: int) -> List[int]:
    """The living (not zombie) processes whose parent is `pid`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_forked_workers_die_with_a_killed_parent(pipeline_path, tmp_path):
    """`kill -9` of `annotate --n-process 2` leaves no worker behind (before: both stayed alive,
    blocked on a pipe to the dead parent)."""
    source = write_lines(tmp_path / "in.jsonl", jsonl_lines(20_000))
    output = tmp_path / "out.jsonl"
    run = run_cli(pipeline_path, source, output, "--n-process", "2", "-b", "4")
    try:
        wait_for(lambda: len(children(run.pid)) >= 2, 180, "two forked workers")
        wait_for(lambda: output.exists() and output.stat().st_size > 0, 180, "annotated lines")
        workers = children(run.pid)
    finally:
        run.kill()
        run.wait()
    wait_for(
        lambda: not any(alive(pid) for pid in workers),
        30,
        f"the workers {workers} to die with their parent",
    )


# --- 5. OS errors are one-line messages, and leave no half line -----------------------------------


def test_full_disk_is_one_line(pipeline_path, tmp_path):
    """/dev/full refuses every write with ENOSPC."""
    source = write_lines(tmp_path / "in.jsonl", jsonl_lines(3))
    output = tmp_path / "out.jsonl"
    output.symlink_to("/dev/full")
    result = invoke("annotate", pipeline_path, source, output)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{output}: cannot write the output (No space left on device)" in result.output
    result = invoke("annotate", pipeline_path, source, "/dev/full")
    assert result.exit_code == 1 and "/dev/full: cannot write the output" in result.output
    assert not Path("/dev/full.progress").exists() and not Path("/dev/full.lock").exists()


class FillsUp:
    """The output file of a disk that fills up after `room` bytes: a partial write, then ENOSPC."""

    def __init__(self, file: Any, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data: Any) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.file.write(bytes(data[: self.room]))
        self.room -= n
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def annotate_until_full(
    nlp: Language, source: Path, output: Path, room: int, on_error: str = "stop"
) -> str:
    from spacy_bert_ner.annotate import writers

    original = writers.ResumableWriter.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.file = FillsUp(self.file, room)

    writers.ResumableWriter.__init__ = init  # type: ignore[method-assign]
    try:
        with pytest.raises(AnnotateError) as err:
            annotate(nlp, source, output, AnnotateOptions(batch_size=3, on_error=on_error))
    finally:
        writers.ResumableWriter.__init__ = original  # type: ignore[method-assign]
    return str(err.value)


def test_disk_full_mid_run_leaves_no_half_line_and_resumes(nlp, tmp_path):
    source = write_lines(tmp_path / "in.jsonl", jsonl_lines(10))
    output = tmp_path / "out.jsonl"
    message = annotate_until_full(nlp, source, output, 3000)
    assert message.startswith(f"{output}: cannot write the output (No space left on device)")
    assert "rerun with --resume" in message and "\n" not in message
    written = ids(output)
    assert output.read_bytes().endswith(b"\n") and written == list(range(len(written)))
    assert 3 <= len(written) < 10
    annotate(nlp, source, output, AnnotateOptions(batch_size=3, resume=True))
    assert ids(output) == list(range(10))


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_output_the_os_refuses_is_one_line(pipeline_path, tmp_path, monkeypatch, code):
    """A read-only filesystem, no permission (the tests may run as root, which has every
    permission: the OS's answer is simulated), or a full disk when the lock file is created."""
    source = write_lines(tmp_path / "in.jsonl", jsonl_lines(3))
    output = tmp_path / "sub" / "out.jsonl"
    real_open = os.open

    def refusing_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith(str(output)):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, *args, **kwargs)

    def refusing_builtin_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith(str(output)):
            raise OSError(code, os.strerror(code), str(path))
        return real_builtin_open(path, *args, **kwargs)

    real_builtin_open = open
    monkeypatch.setattr(os, "open", refusing_open)
    monkeypatch.setattr("builtins.open", refusing_builtin_open)
    result = invoke("annotate", pipeline_path, source, output)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{output}: cannot write the output ({os.strerror(code)})" in (
        " ".join(result.output.split())
    )


def test_directories_and_unreadable_inputs_are_one_line(nlp, pipeline_path, tmp_path):
    source = write_lines(tmp_path / "in.jsonl", jsonl_lines(3))
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(AnnotateError, match=r"dir.jsonl: cannot read the input \(Is a directory"):
        annotate(nlp, tmp_path / "dir.jsonl", tmp_path / "o.jsonl")
    (tmp_path / "outdir").mkdir()
    with pytest.raises(AnnotateError, match=r"outdir: cannot write the output \(Is a directory\)"):
        annotate(nlp, source, tmp_path / "outdir")
    with pytest.raises(AnnotateError, match=r"missing.jsonl: cannot read the input \(No such"):
        annotate(nlp, tmp_path / "missing.jsonl", tmp_path / "o2.jsonl")
    if os.geteuid() != 0:  # root reads anything
        source.chmod(0)
        result = invoke("annotate", pipeline_path, source, tmp_path / "o3.jsonl")
        assert result.exit_code == 1 and "cannot read the input (Permission denied)" in (
            " ".join(result.output.split())
        )


# --- 6. Strict JSON out; 8. every bad record named by file:line, deep nesting included ------------

BAD_NUMBERS = [
    '{"id": 1, "text": "a", "x": 1e400}',
    '{"id": 2, "text": "a", "x": NaN}',
    '{"id": 3, "text": "a", "x": -Infinity}',
    '{"id": 4, "text": "a", "x": ' + "9" * 5000 + "}",
]


def test_output_is_strict_json(nlp, tmp_path):
    """1e400 was written back as Infinity and NaN passed through: neither is JSON (RFC 8259)."""
    lines = [jsonl_lines(1)[0], *BAD_NUMBERS, json.dumps({"id": 5, "text": "ok", "x": 1e300})]
    source = write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    stats = annotate(nlp, source, output, AnnotateOptions(on_error="skip"))
    assert ids(output) == [0, 5]  # strict_loads would fail on NaN or Infinity
    reasons = [(e.line, e.reason) for e in stats.skipped]
    assert [line for line, _ in reasons] == [2, 3, 4, 5]
    assert "1e400 is out of range" in reasons[0][1] and "NaN is not a JSON value" in reasons[1][1]
    assert "-Infinity is not a JSON value" in reasons[2][1]
    assert all(r.startswith("invalid JSON") for _, r in reasons)


def test_a_record_with_an_output_field_is_refused(nlp, pipeline_path, tmp_path):
    """An input "entities" field was silently replaced by the annotation: now refused, saying
    what to do."""
    lines = jsonl_lines(2) + [json.dumps({"id": 2, "text": "paris", "entities": ["mine"]})]
    source = write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    result = invoke("annotate", pipeline_path, source, output)
    assert result.exit_code == 1
    assert 'in.jsonl:3: the record already has an "entities" field' in " ".join(
        result.output.split()
    )
    assert ids(output) == [0, 1]


def test_deep_nesting_is_a_bad_record(nlp, tmp_path):
    """A 100,000-level nested record raised RecursionError, and the good line before it was lost."""
    deep = '{"id": 1, "text": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    lines = [jsonl_lines(1)[0], deep, json.dumps({"id": 2, "text": "paris"})]
    source = write_lines(tmp_path / "in.jsonl", lines)
    stats = annotate(nlp, source, tmp_path / "skip.jsonl", AnnotateOptions(on_error="skip"))
    assert ids(tmp_path / "skip.jsonl") == [0, 2]
    assert [(e.line, e.reason.split(":")[0]) for e in stats.skipped] == [(2, "invalid JSON")]
    assert "nested too deeply" in stats.skipped[0].reason
    with pytest.raises(RecordError, match=r"in.jsonl:2: invalid JSON: nested too deeply"):
        annotate(nlp, source, tmp_path / "stop.jsonl")
    assert ids(tmp_path / "stop.jsonl") == [0]


def test_messages_show_invisible_characters_escaped(nlp, tmp_path):
    lines = ['{"id": 0, "text": "a"}\u00a0', '{"id": 1,\u200b "text": "a"}', "caf\udce9"]
    source = tmp_path / "in.jsonl"
    source.write_bytes("\n".join(lines).encode("utf8", "surrogateescape") + b"\n")
    stats = annotate(nlp, source, tmp_path / "out.jsonl", AnnotateOptions(on_error="skip"))
    messages = [str(e) for e in stats.skipped]
    assert (
        messages[0].startswith(f"{source}:1: invalid JSON: Extra data") and "\\xa0" in messages[0]
    )
    assert messages[1].startswith(f"{source}:2: invalid JSON") and "\\u200b" in messages[1]
    assert messages[2] == f"{source}:3: not valid UTF-8 (byte 0xe9)."


# --- Fuzz: pipes against files, failing writes, concurrent runs ---------------------------------

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES or 10,
    deadline=None,
    derandomize=not FUZZ_EXAMPLES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LINE = st.one_of(
    st.builds(
        lambda i, t: json.dumps({"id": i, "text": t}), st.integers(0, 99), st.text(max_size=20)
    ),
    st.sampled_from(BAD_NUMBERS + ['{"id": 7, "text": "x", "entities": 1}', "", "{", "[1]"]),
)


@FUZZ
@given(
    lines=st.lists(LINE, min_size=1, max_size=12),
    room=st.integers(0, 600),
    gzipped=st.booleans(),
)
def test_fuzz_pipes_full_disks_and_a_second_writer(nlp, tmp_path_factory, lines, room, gzipped):
    """Whatever the records: a pipe gives the same output as the file; a disk that fills up at
    any byte leaves whole lines only, and `--resume` then completes the same output; a second
    writer on the output meanwhile is refused and changes nothing."""
    from spacy_bert_ner.annotate.claim import OutputLock

    tmp_path = tmp_path_factory.mktemp("fuzz")
    data = ("\n".join(lines) + "\n").encode("utf8")
    data = gzip.compress(data) if gzipped else data
    source = tmp_path / "in.jsonl"
    source.write_bytes(data)
    options = AnnotateOptions(on_error="skip", batch_size=3)
    expected = tmp_path / "file.jsonl"
    stats = annotate(nlp, source, expected, options)
    skipped = [(e.line, e.reason) for e in stats.skipped]
    piped = tmp_path / "pipe.jsonl"
    stats = annotate(
        nlp,
        pipe_path(data),
        piped,
        AnnotateOptions(on_error="skip", batch_size=3, file_format="jsonl"),
    )
    assert piped.read_bytes() == expected.read_bytes()
    assert [(e.line, e.reason) for e in stats.skipped] == skipped
    full = tmp_path / "full.jsonl"
    if expected.stat().st_size > room:
        annotate_until_full(nlp, source, full, room, "skip")
        assert expected.read_bytes().startswith(full.read_bytes())
        assert full.read_bytes().endswith(b"\n") or not full.read_bytes()
        with OutputLock(full), pytest.raises(AnnotateError, match="another annotate run"):
            annotate(nlp, source, full, AnnotateOptions(on_error="skip", resume=True))
        annotate(nlp, source, full, AnnotateOptions(on_error="skip", batch_size=3, resume=True))
        assert full.read_bytes() == expected.read_bytes()
