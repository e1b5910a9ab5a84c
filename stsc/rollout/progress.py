"""Progress of the rollout stage: episodes done, running and failed, steps, USD spent and ETA.

On a terminal (stderr is a TTY) a ``rich`` progress bar is drawn on stderr; otherwise the same
figures are logged every ``interval_s`` seconds and once at the end. Counters are updated from the
event loop's thread only.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """What the display shows. ``done``/``failed`` include episodes finished by earlier runs of
    the stage (``resumed``); ``steps`` counts executed steps of finished episodes plus model calls
    of running ones."""

    total: int
    resumed: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    retries: int = 0
    steps: int = 0
    calls: int = 0
    cost_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def ended(self) -> int:
        return self.done + self.failed

    def eta_s(self) -> float | None:
        """Seconds left at this run's pace; None before the first episode of this run ends."""
        progressed = self.ended - self.resumed
        if progressed <= 0:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed / progressed * (self.total - self.ended)

    def summary(self) -> str:
        eta = self.eta_s()
        return (
            f"{self.ended}/{self.total} episodes ended ({self.done} done, {self.failed} failed), "
            f"{self.running} running, {self.retries} retries, {self.steps} steps, "
            f"${self.cost_usd:.4f} spent" + (f", ETA {_clock(eta)}" if eta is not None else "")
        )


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class RolloutProgress:
    """The display; a context manager. ``rich`` is imported only when drawing on a terminal."""

    def __init__(self, total: int, interval_s: float = 30.0, stream: TextIO | None = None):
        self.counters = Counters(total=total)
        self.interval_s = interval_s
        self.stream = stream if stream is not None else sys.stderr
        self._progress: Any = None
        self._task: Any = None
        self._last_log = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> RolloutProgress:
        if _is_terminal(self.stream):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]rollout"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=False,
            )  # fmt: skip
            self._progress.start()
            self._task = self._progress.add_task("rollout", total=self.counters.total, stats="")
            self._refresh()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._refresh()
            self._progress.stop()
            self._progress = None
        log.info("rollout: %s", self.counters.summary())

    # -- events ------------------------------------------------------------------------------------

    def resumed(self, done: int, steps: int, cost_usd: float) -> None:
        c = self.counters
        c.resumed += done
        c.done += done
        c.steps += steps
        c.cost_usd += cost_usd
        self._refresh()

    def episode_started(self) -> None:
        self.counters.running += 1
        self._refresh()

    def episode_stopped(self, calls: int) -> None:
        """An attempt ended; its ``calls`` live-counted model calls leave the step count."""
        self.counters.running -= 1
        self.counters.steps -= calls

    def episode_done(self, steps: int) -> None:
        self.counters.done += 1
        self.counters.steps += steps
        self._refresh()

    def episode_failed(self) -> None:
        self.counters.failed += 1
        self._refresh()

    def retry(self) -> None:
        self.counters.retries += 1
        self._refresh()

    def model_call(self, cost_usd: float) -> None:
        self.counters.calls += 1
        self.counters.steps += 1
        self.counters.cost_usd += cost_usd

    def tick(self) -> None:
        """Called about once a second: redraws, or logs a line every ``interval_s``."""
        self._refresh()
        now = time.monotonic()
        if self._progress is None and now - self._last_log >= self.interval_s:
            self._last_log = now
            log.info("rollout: %s", self.counters.summary())

    def _refresh(self) -> None:
        if self._progress is None:
            return
        c = self.counters
        stats = (
            f"running {c.running} · failed {c.failed} · retries {c.retries} · steps {c.steps} · "
            f"${c.cost_usd:.2f}"
        )
        self._progress.update(self._task, completed=c.ended, stats=stats)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
