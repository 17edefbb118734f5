"""Ends the processes of a Ray cluster that an annotate run started, once the run's process (the
driver) dies, however it dies (`kill -9` included).

Ray ties the processes `ray.init` starts (gcs_server, raylet, dashboard, ...) to the driver's life
with `prctl(PR_SET_PDEATHSIG)`, but not the processes those start in turn: the raylet's agents
(DashboardAgent, RuntimeEnvAgent) notice its death at once, then spend a minute trying to report
it to the dead GCS before they exit, and workers and actors take a few seconds to notice. No Ray
setting shortens that minute (the agents' report has a fixed 60 s timeout), so annotate brings
its own reaper, a small process (stdlib only: it starts in milliseconds) in a session of its own
(a signal for the driver's process group spares it):

- `reaped_on_death()`, around `ray.init`, starts the reaper once per driver and tells it, through
  a pipe whose only write end the driver holds, which of the driver's children the block started
  (those that existed before are not the cluster's); the reaper also looks for them itself every
  `POLL_S` seconds while the block runs, in case the driver dies inside it;
- while the driver lives, the reaper records every descendant of those processes (each by pid and
  start time, so that a pid reused later is never taken for it) every `POLL_S` seconds: the agents,
  workers and actors are recorded while their parent, the raylet, is alive to show them;
- when the driver dies the kernel closes the pipe: the reaper sends SIGTERM to every recorded
  process still alive and to their descendants, SIGKILL to those left `GRACE_S` seconds later,
  and exits. After a clean run Ray has shut its processes down already, so it finds none. A
  block that started no process (`ray.init` joined an existing cluster) stops the reaper at once:
  the processes of a cluster annotate merely joins are never recorded.

A process started less than `POLL_S` seconds before the driver died may be missed; Ray's workers
end by themselves within seconds of the raylet's death. Linux only (it reads /proc); elsewhere
`reaped_on_death` does nothing.
"""

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

# Seconds between the reaper's looks at the processes while the driver lives, while the driver
# is inside a block (and while the reaper ends them); seconds between SIGTERM and SIGKILL.
POLL_S = 0.5
REAP_POLL_S = 0.1
GRACE_S = 2.0

Process = Tuple[int, int]  # pid and start time (clock ticks after boot): one process, ever


def living() -> Dict[int, Tuple[int, int]]:
    """Every living (not zombie) process: pid -> (parent pid, start time), read from /proc."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                found[int(name)] = stat
    return found


def _stat(pid: int) -> Optional[Tuple[int, int]]:
    """The parent pid and start time of process `pid`, from /proc; None if there is none (or
    only a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):  # gone meanwhile
        return None
    return None if fields[0] == b"Z" else (int(fields[1]), int(fields[19]))


def children(pid: int, processes: Dict[int, Tuple[int, int]]) -> Set[Process]:
    """The living children of `pid`."""
    return {(child, start) for child, (parent, start) in processes.items() if parent == pid}


def grow(tree: Set[Process], processes: Dict[int, Tuple[int, int]]) -> Set[Process]:
    """The processes of `tree` still alive, and all their living descendants."""
    kids: Dict[int, List[Process]] = {}
    for pid, (parent, start) in processes.items():
        kids.setdefault(parent, []).append((pid, start))
    alive = [p for p in tree if processes.get(p[0], (0, -1))[1] == p[1]]
    grown, todo = set(alive), list(alive)
    while todo:
        for child in kids.get(todo.pop()[0], []):
            if child not in grown:
                grown.add(child)
                todo.append(child)
    return grown


def send(process: Process, sig: int) -> None:
    """Signal `process` if it is still the one with that pid and start time. A pidfd (Linux 5.3+),
    opened before the start time is checked, pins the process checked."""
    pid, start = process
    fd = -1
    with contextlib.suppress(AttributeError, OSError):
        fd = os.pidfd_open(pid)
    try:
        if living_start(pid) != start:
            return
        if fd >= 0:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    finally:
        if fd >= 0:
            os.close(fd)


def living_start(pid: int) -> int:
    """The start time of process `pid`, or -1 if there is none (or only a zombie)."""
    stat = _stat(pid)
    return -1 if stat is None else stat[1]


def reap(tree: Set[Process], grace_s: float = GRACE_S) -> None:
    """SIGTERM the processes of `tree` still alive and their descendants (including those that
    appear meanwhile), SIGKILL those left after `grace_s` seconds, and return once none is left
    (or `grace_s` after the SIGKILL, for a process the kernel holds)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        signalled: Set[Process] = set()
        end = time.monotonic() + grace_s
        while True:
            tree = grow(tree, living())
            for process in tree - signalled:
                send(process, sig)
            signalled |= tree
            if not tree:
                return
            if time.monotonic() >= end:
                break
            time.sleep(REAP_POLL_S)


def parse(words: Iterable[bytes]) -> Set[Process]:
    """Processes written as "pid:start"."""
    return {(int(pid), int(start)) for pid, start in (word.split(b":") for word in words)}


def main(driver: int) -> None:
    """The reaper of the cluster started by process `driver`: read its messages on stdin ("open"
    and the driver's children then, before `ray.init`; "close" and the children it started,
    after), record the cluster's processes until stdin ends (the driver died or exited), then end
    those still alive."""
    me = os.getpid()
    tree: Set[Process] = set()
    before: Optional[Set[Process]] = None  # the driver's children when the open block began
    pending = b""
    while True:
        readable, _, _ = select.select([0], [], [], REAP_POLL_S if before is not None else POLL_S)
        processes = living()
        if before is not None:  # the driver is inside the block: its new children are the cluster's
            tree |= {p for p in children(driver, processes) - before if p[0] != me}
        if readable:
            data = os.read(0, 4096)
            if not data:
                break
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                word, *listed = line.split()
                if word == b"open":
                    before = parse(listed)
                else:
                    tree |= parse(listed)
                    before = None
        tree = grow(tree, processes)
    reap(tree)


class Reaper:
    """The driver's side of its reaper: the process, and the write end of the pipe to it."""

    def __init__(self) -> None:
        read_end, self.pipe = os.pipe()  # not inherited by exec: only the reaper gets read_end
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", os.path.abspath(__file__), str(os.getpid())],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                start_new_session=True,
            )
        finally:
            os.close(read_end)
        self.watching = False  # whether it has recorded processes to end

    def send(self, word: str, processes: Set[Process]) -> bool:
        """Send one message; False if the reaper is gone (killed)."""
        line = " ".join([word, *(f"{pid}:{start}" for pid, start in processes)]) + "\n"
        try:
            os.write(self.pipe, line.encode())
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Close the pipe and wait for the reaper: it ends what it recorded, and exits."""
        os.close(self.pipe)
        self.process.wait()


# This process's reaper, once a block of `reaped_on_death` has started one.
_reaper: Optional[Reaper] = None


@contextlib.contextmanager
def reaped_on_death() -> Iterator[None]:
    """Have the processes that the block starts (and all their descendants) ended within seconds
    of this process's death, however it dies; the processes of a cluster that the block joins
    are not touched. Nothing on systems other than Linux."""
    global _reaper
    if not sys.platform.startswith("linux"):
        yield
        return
    reaper = _reaper = _reaper or Reaper()
    before = children(os.getpid(), living())
    opened = reaper.send("open", before)
    try:
        yield
    finally:
        started = children(os.getpid(), living()) - before
        started = {p for p in started if p[0] != reaper.process.pid}
        reaper.watching |= bool(started)
        if not (opened and reaper.send("close", started) and reaper.watching):
            # nothing to watch (the block joined an existing cluster), or the reaper is gone:
            # the next block starts another
            _reaper = None
            reaper.stop()


def _close_in_forked_child() -> None:
    """A child forked without exec must not hold the pipe open once this process dies."""
    global _reaper
    if _reaper is not None:
        os.close(_reaper.pipe)
        _reaper = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_forked_child)


if __name__ == "__main__":
    main(int(sys.argv[1]))
