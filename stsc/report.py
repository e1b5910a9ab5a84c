"""Funnel and cost report: counts in/out with drop reasons, tokens, USD and wall time per stage."""

from __future__ import annotations

from typing import Any


def format_outcomes(outcomes: list[Any]) -> str:
    """A plain-text table of stage outcomes (``stsc.pipeline.StageOutcome``)."""
    header = f"{'stage':<10} {'key':<12} {'cached':<6} {'in':>6} {'out':>6} {'USD':>9} {'wall s':>8}  drops"
    lines = ["", header, "-" * len(header)]
    for o in outcomes:
        r = o.report
        drops = ", ".join(f"{k}={v}" for k, v in sorted(r.drops.items())) or "-"
        lines.append(
            f"{o.name:<10} {o.key:<12} {'yes' if o.cache_hit else 'no':<6} {r.items_in:>6} {r.items_out:>6} "
            f"{r.cost_usd:>9.4f} {r.wall_s:>8.1f}  {drops}"
        )
    return "\n".join(lines)
