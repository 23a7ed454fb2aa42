"""Keep the runtimes' INFO logs out of the commands' output (issue 19).

LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." comes from its C++ minimal
logger, and TensorFlow 2.21 logs its oneDNN and CPU-feature notices through absl before
absl::InitializeLog, where TF_CPP_MIN_LOG_LEVEL does not reach them (checked: levels 1 to 3
leave them in). Neither has a switch reachable from Python, and both write straight onto file
descriptor 2. So for the length of a command fd 2 goes through a pipe, and a thread forwards
every line to the real stderr except those INFO lines. Everything else (our errors, warnings,
a child process's output) passes unchanged and in order.
"""
from __future__ import annotations

import os
import re
import select
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

# INFO lines only: each says that something worked as it should. Warnings and errors pass.
NOISE_LINES = tuple(re.compile(pattern) for pattern in (
    rb"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.\r?$",  # LiteRT
    rb"^I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.-]+:\d+\] ",  # absl INFO: I<mmdd> <hh:mm:ss.us> <thread> <file>:<line>]
    rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\r?$",
    rb"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.\r?$",
))
PARTIAL_LINE_WAIT_S = 0.1  # a line still without its newline after this long is passed on as is


def is_noise(line: bytes) -> bool:
    return any(pattern.match(line) for pattern in NOISE_LINES)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _forward(read_fd: int, out_fd: int) -> None:
    """Copy the pipe to `out_fd` line by line, leaving out the noise lines, until EOF."""
    pending = b""
    while True:
        ready, _, _ = select.select([read_fd], [], [], PARTIAL_LINE_WAIT_S)
        if not ready:
            if pending:  # a prompt or a line being written: do not hold it back
                _write_all(out_fd, pending)
                pending = b""
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
        if b"\r" in pending:  # a progress bar redrawing its line (never a noise line): pass it on now
            cut = pending.rindex(b"\r") + 1
            kept, pending = kept + pending[:cut], pending[cut:]
        if kept:
            _write_all(out_fd, kept)
    if pending and not is_noise(pending):
        _write_all(out_fd, pending)
    os.close(read_fd)


_filtering_a_terminal: bool | None = None  # while filtering: whether the real stderr is a terminal


def stderr_is_terminal() -> bool:
    """Whether the user sees stderr on a terminal (through the filter's pipe too): the test
    for drawing a progress bar."""
    if _filtering_a_terminal is not None:
        return _filtering_a_terminal
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _stderr_is_fd_2() -> bool:
    """False under a test's capture (sys.stderr replaced), where fd 2 is not ours to reroute."""
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


@contextmanager
def runtime_noise_filtered() -> Iterator[None]:
    """Within the block, fd 2 passes through the noise filter (see the module docstring)."""
    global _filtering_a_terminal
    if not _stderr_is_fd_2() or _filtering_a_terminal is not None:  # not ours, or filtered already
        yield
        return
    sys.stderr.flush()
    _filtering_a_terminal = os.isatty(2)
    real_stderr = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    forwarder = threading.Thread(target=_forward, args=(read_fd, real_stderr), name="stderr-filter", daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        _filtering_a_terminal = None
        os.dup2(real_stderr, 2)  # drops the pipe's last write end in this process: the thread sees EOF
        forwarder.join(timeout=5)  # a child still holding the pipe keeps it open: do not wait for it
        if not forwarder.is_alive():
            os.close(real_stderr)
