"""Claiming an output before a run writes it: one writer per output (`OutputLock`), and never
the input as output."""

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

from .options import AnnotateError
from .reading import is_stream, os_error


def companion(output_path: Path, suffix: str) -> Path:
    """A file beside the output: OUTPUT.progress, OUTPUT.lock."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + suffix)


def check_paths(input_path: Path, output_path: Path) -> None:
    """Refuse an output that is the input (or its progress or lock file): writing would empty it."""
    output_path, input_path = Path(output_path), Path(input_path)
    companions = (companion(output_path, ".progress"), companion(output_path, ".lock"))
    for target in (output_path, *companions):
        try:
            same = (
                os.path.samefile(input_path, target)
                if target.exists()
                else input_path.resolve() == target.resolve()
            )
        except OSError:
            same = False
        if same:
            raise AnnotateError(
                f"{target} is the input file {input_path}: writing it would destroy the input. "
                "Choose another output path."
            )
    if output_path.is_dir():
        raise AnnotateError(f"{output_path}: cannot write the output (Is a directory).")


class OutputLock:
    """The one writer of an output: an exclusive `flock` on OUTPUT.lock, held from before the
    output is checked until the run ends, so a second run on the same output (with any input or
    options) is refused at once, naming the run that holds it. The kernel releases the lock when
    its process dies, however it dies, so a killed run never blocks the next one. An output that
    is not a regular file (a device, a pipe) takes no lock."""

    def __init__(self, output_path: Path) -> None:
        self.output_path = Path(output_path)
        self.path = companion(self.output_path, ".lock")
        self.fd: Optional[int] = None

    def acquire(self) -> "OutputLock":
        if is_stream(self.output_path):
            return self
        try:
            self.output_path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.read(fd, 200).decode("utf8", "replace").strip() or "unknown"
                    os.close(fd)
                    raise AnnotateError(
                        f"{self.output_path} is being written by another annotate run ({holder}; "
                        f"lock file {self.path}): wait for it to end, or choose another output "
                        "path."
                    ) from None
                except BaseException:
                    os.close(fd)
                    raise
                try:  # a run ending meanwhile removed the file we locked: lock the new one
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode())
        except OSError as err:
            raise os_error(self.output_path, err, "write the output") from None
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked, so no other run holds this file
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
