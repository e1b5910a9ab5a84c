"""Optional MLflow tracing of the teacher's model calls (``rollout.trace``).

``mlflow.litellm.autolog()`` records every litellm call (messages, answer, tokens, cost) as a
trace. Traces go to the experiment of the stage's tracking run and are linked to that run; they
are exported asynchronously and flushed when the stage ends. MLflow is imported only when tracing
is on; autologging is switched off and the tracking URI restored afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from stsc.config import RootConfig

log = logging.getLogger(__name__)


@contextmanager
def model_call_tracing(cfg: RootConfig, tracker: Any) -> Iterator[None]:
    """Trace litellm calls made inside the block when ``cfg.rollout.trace`` is set and the teacher
    is an ``llm`` policy and tracking is enabled; otherwise do nothing. ``tracker`` is the stage's
    ``stsc.tracking.StageTracker`` (None when tracking is off: traces then go to the configured
    store's experiment, unlinked to a run)."""
    if not cfg.rollout.trace or cfg.teacher.kind != "llm" or not cfg.tracking.enabled:
        if cfg.rollout.trace:
            log.warning(
                "rollout.trace is set but nothing is traced: it needs teacher.kind=llm (is %r) and "
                "tracking.enabled=true (is %s)",
                cfg.teacher.kind,
                cfg.tracking.enabled,
            )
        yield
        return
    import mlflow

    from stsc.tracking import make_client, tracking_uri

    run_id = getattr(tracker, "run_id", None)
    if run_id is not None:
        experiment_id = tracker.client.get_run(run_id).info.experiment_id
    else:
        _, experiment_id = make_client(cfg.tracking, cfg.root_path)
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri(cfg.tracking, cfg.root_path))
    mlflow.set_experiment(experiment_id=experiment_id)
    mlflow.litellm.autolog()
    active = mlflow.start_run(run_id=run_id) if run_id is not None else None
    try:
        yield
    finally:
        mlflow.flush_trace_async_logging()
        mlflow.litellm.autolog(disable=True)
        if active is not None:
            mlflow.end_run()  # the stage runner sets the run's final status afterwards
        mlflow.set_tracking_uri(previous_uri)
        log.info("rollout: model-call traces logged to experiment %s", experiment_id)


async def flush_model_call_logs(timeout_s: float = 30.0) -> None:
    """Run the logging callbacks litellm queued on this event loop (MLflow traces among them)
    before the loop closes; queued callbacks left behind are lost or run at exit against whatever
    tracking destination is current then. Does nothing when litellm was never imported."""
    import sys

    if "litellm" not in sys.modules:
        return
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    except ImportError:  # a litellm without the queued logging worker runs callbacks inline
        return
    try:
        await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), timeout=timeout_s)
    except TimeoutError:
        log.warning("rollout: litellm's logging callbacks did not finish within %.0f s", timeout_s)
