"""The reaper of the Ray engine (`spacy_bert_ner/annotate/reaper.py`), without Ray: what a block
of `reaped_on_death` starts ends within seconds of a `kill -9` of the process that ran it, and
nothing else does. The same with a real Ray cluster is in test_ray.py."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from util import alive, descendants, survivors

from spacy_bert_ner.annotate import reaper

# Loads reaper.py by its path (as the reaper itself runs), not the whole package, so it starts at
# once; then starts one process before a block, a shell that ignores SIGTERM in a block (its
# children, started after the block, ignore it too), and a block that starts nothing.
DRIVER = textwrap.dedent(
    """
    import importlib.util, subprocess, sys, time
    spec = importlib.util.spec_from_file_location("reaper", sys.argv[1])
    reaper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reaper)
    with reaper.reaped_on_death():
        pass
    print(reaper._reaper is None, flush=True)
    before = subprocess.Popen(["sleep", "300"])
    with reaper.reaped_on_death():
        started = subprocess.Popen(
            ["sh", "-c", "trap '' TERM; sleep 1; sleep 300 & sh -c 'sleep 300' & wait"]
        )
    with reaper.reaped_on_death():
        pass
    print(before.pid, started.pid, reaper._reaper.process.pid, flush=True)
    time.sleep(300)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_a_killed_driver_takes_what_its_blocks_started_and_nothing_else():
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, reaper.__file__], stdout=subprocess.PIPE, text=True
    )
    try:
        # A block that starts nothing (`ray.init` joining a cluster) leaves no reaper running.
        assert driver.stdout.readline().split() == ["True"]
        before, started, reaper_pid = map(int, driver.stdout.readline().split())
        deadline = time.monotonic() + 30  # the shell starts its children 1 s after the block
        while len(descendants(started)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        processes = descendants(driver.pid)
        assert len(descendants(started)) == 3, processes
    finally:
        driver.kill()
        driver.wait()
        driver.stdout.close()
    try:
        # SIGTERM, ignored, then SIGKILL 2 s later: gone well within 6 s.
        assert survivors({p: c for p, c in processes.items() if p != before}, 6) == {}
        assert alive(before)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(before, signal.SIGKILL)
    assert started in processes and reaper_pid in processes
