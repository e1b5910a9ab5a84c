"""``rollout.trace``: every teacher call becomes an MLflow trace linked to the stage's run."""

from __future__ import annotations

import json
from pathlib import Path

from stsc.config import TrackingConfig
from stsc.rollout import run_rollout
from tests.rollout.conftest import agent_turn, rollout_config, stage_context


def test_model_calls_are_traced_in_the_stage_run(library: Path, openai_server, tmp_path: Path) -> None:
    from stsc.tracking import JobTracker

    openai_server.responder = agent_turn
    cfg = rollout_config(tmp_path, openai_server, per_task=1, trace=True)
    cfg.tracking = TrackingConfig(experiment="rollout-trace")
    job = JobTracker(cfg.tracking, cfg.root_path)
    job.start("job", {})
    ctx = stage_context(tmp_path, library)
    ctx.tracker = job.start_stage("rollout", ctx.key, {})
    run_rollout(cfg, ctx)

    traces = job.client.search_traces(locations=[job.experiment_id], run_id=ctx.tracker.run_id)
    assert len(traces) == len(openai_server.chat_requests) == 8
    assert all("submission" in json.dumps(t.data.spans[0].inputs) for t in traces)
    import litellm

    assert "mlflow" not in litellm.success_callback  # autologging is switched off again
