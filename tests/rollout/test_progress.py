"""The progress display: a rich bar on a terminal, log lines otherwise."""

from __future__ import annotations

import io
import logging

import pytest

from stsc.rollout.progress import RolloutProgress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _play(progress: RolloutProgress) -> None:
    progress.resumed(1, steps=7, cost_usd=0.5)
    progress.episode_started()
    progress.model_call(0.25)
    progress.model_call(0.25)
    progress.episode_stopped(calls=2)
    progress.episode_done(steps=3)
    progress.episode_started()
    progress.episode_stopped(calls=0)
    progress.episode_failed()
    progress.retry()
    progress.tick()


def test_without_a_terminal_progress_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="stsc.rollout.progress"):
        with RolloutProgress(total=4, interval_s=0.0, stream=stream) as progress:
            _play(progress)
    assert stream.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # one tick, one summary at the end
    assert lines[-1].startswith(
        "rollout: 3/4 episodes ended (2 done, 1 failed), 0 running, 1 retries, 10 steps"
    )
    assert "$1.0000 spent" in lines[-1] and "ETA 0:00:" in lines[-1]


def test_on_a_terminal_a_progress_bar_is_drawn() -> None:
    stream = _Terminal()
    with RolloutProgress(total=4, interval_s=0.0, stream=stream) as progress:
        _play(progress)
    drawn = stream.getvalue()
    assert "rollout" in drawn and "3/4" in drawn
    assert "failed 1" in drawn and "steps 10" in drawn and "$1.00" in drawn


def test_counters_tell_no_eta_before_an_episode_of_this_run_ends() -> None:
    progress = RolloutProgress(total=4, stream=io.StringIO())
    progress.resumed(2, steps=0, cost_usd=0.0)
    assert progress.counters.eta_s() is None
    progress.episode_done(steps=1)
    assert progress.counters.eta_s() is not None
