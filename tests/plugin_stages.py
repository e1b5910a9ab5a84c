"""Test-only stages, imported with ``plugins=[tests.plugin_stages]`` (in-process or by a subprocess).

``probe_items`` writes ``topics.n`` items one by one (``STSC_TEST_ITEM_DELAY`` seconds apart), skipping
those already complete, and appends each to a journal so duplicates would show; ``probe_sum`` sums them
(``STSC_TEST_SUM_DELAY`` seconds after listing them).
``probe_fail`` raises when ``seed=13`` (one failing job of a sweep).
"""

from __future__ import annotations

import logging
import os
import time

from stsc.pipeline import StageSpec, register
from stsc.store import JsonlJournal, atomic_write_json, completed_items, read_json

log = logging.getLogger(__name__)


def run_probe_items(cfg, ctx) -> None:
    delay = float(os.environ.get("STSC_TEST_ITEM_DELAY", "0"))
    items = ctx.out_dir / "items"
    done = completed_items(items)
    journal = JsonlJournal(ctx.out_dir / "journal.jsonl")
    secret_env = os.environ.get("STSC_TEST_LOG_SECRET_FROM")
    if secret_env:
        log.info("probe sees credential %s", os.environ[secret_env])
    for i in range(cfg.topics.n):
        ctx.report.add_in()
        name = f"item-{i:04d}"
        if name in done:
            ctx.report.add_out()
            continue
        time.sleep(delay)
        atomic_write_json(items / f"{name}.json", {"i": i, "value": i * i})
        journal.append({"item": name})
        ctx.report.add_out()
    ctx.report.drop("probe_reason", 0)
    ctx.log_table("items", [{"i": i} for i in range(min(cfg.topics.n, 3))])


def run_probe_sum(cfg, ctx) -> None:
    items = sorted((ctx.input("probe_items") / "items").glob("*.json"))
    time.sleep(float(os.environ.get("STSC_TEST_SUM_DELAY", "0")))  # between listing and reading
    total = sum(read_json(p)["value"] for p in items) * cfg.rollout.per_task
    ctx.report.add_in(len(items))
    ctx.report.add_out(1)
    ctx.report.metrics["total"] = float(total)
    atomic_write_json(ctx.out_dir / "sum.json", {"total": total})


def run_probe_fail(cfg, ctx) -> None:
    if cfg.seed == 13:
        secret_env = os.environ.get("STSC_TEST_LOG_SECRET_FROM")
        shown = (
            f" holding {os.environ[secret_env]} and http://u:{os.environ[secret_env]}@host"
            if secret_env
            else ""
        )
        raise RuntimeError(f"probe_fail: failing as asked (seed=13){shown}") from ValueError(shown)
    ctx.report.add_out()


register(StageSpec("probe_items", run_probe_items, (), ("topics.n",)))
register(StageSpec("probe_sum", run_probe_sum, ("probe_items",), ("rollout.per_task",)))
register(StageSpec("probe_fail", run_probe_fail))  # keyed by the seed
