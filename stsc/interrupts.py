"""SIGTERM stops stsc the way Ctrl-C does.

Batch schedulers (Slurm at a time limit or preemption), ``kill``, ``docker stop`` and Kubernetes
end a job with SIGTERM, and Python's default for it is to die at once: sandboxes, half-written
run folders and an MLflow run left ``RUNNING``. ``stop_on_sigterm`` turns the first SIGTERM into
``Terminated``, a ``KeyboardInterrupt``, raised in the main thread, so every clean-up that Ctrl-C
runs runs too (episodes' sandboxes closed, the stage's MLflow run marked ``KILLED``, a training
child terminated). A second SIGTERM during that clean-up ends the process at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process SIGTERM ended


_INTERRUPTED = threading.Event()


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM is not caught
    raise Terminated(f"received {signal.Signals(signum).name}")


def stop_on_sigterm() -> bool:
    """Install the handler; only the main thread can (returns False elsewhere, changing nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGTERM, _raise_terminated)
    return True


def note_interrupted() -> None:
    """Record that this process is ending because it was interrupted (Ctrl-C or SIGTERM), so that
    exit hooks end what is still open as ``KILLED`` rather than ``FAILED``."""
    _INTERRUPTED.set()


def interrupted() -> bool:
    """Whether ``note_interrupted`` was called in this process."""
    return _INTERRUPTED.is_set()
