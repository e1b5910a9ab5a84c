"""Performance-profile figure of an AUP result (matplotlib, Agg backend, imported on use)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from stsc.evaluation.aup import BASELINE, AUPResult, RatioTable, profile

logger = logging.getLogger(__name__)


def _draw(ax, ratios: RatioTable, max_tau: float, labels: dict[str, str], title: str) -> None:
    from matplotlib import colormaps

    tau, curves = profile(ratios.ratios, max_tau)
    palette = colormaps["tab10" if len(curves) <= 11 else "tab20"]
    for i, (method, rho) in enumerate(curves.items()):
        style = (
            {"color": "black", "linestyle": "--"} if method == BASELINE else {"color": palette(i % palette.N)}
        )
        ax.step(tau, rho, where="post", label=labels[method], **style)
    ax.set_title(title)
    ax.set_xlim(0.0, max_tau)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(r"$\tau$ ($\log_{10}$ performance ratio)")
    ax.grid(alpha=0.3)


def plot_performance_profiles(result: AUPResult, path: Path) -> Path:
    """Draw the best@k and last@k profiles side by side and write them to ``path`` as PNG.

    The legend shows each method's best and last AUP; the title names ``max_tau`` and the number of tasks.
    Returns ``path``. Uses matplotlib's object API with the Agg canvas, so no display and no global
    backend switch are needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from stsc.store import atomic_write_bytes

    labels = {m: f"{m} ({result.best_aup[m]:.3f} / {result.last_aup[m]:.3f})" for m in result.methods}
    fig = Figure(figsize=(14, 5), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, sharey=True)
    _draw(left, result.best_ratios, result.max_tau, labels, "Best attempt (best@k)")
    _draw(right, result.last_ratios, result.max_tau, labels, "Last attempt (last@k)")
    left.set_ylabel(r"fraction of tasks $\rho(\tau)$")
    fig.legend(
        *left.get_legend_handles_labels(),
        loc="outside right center",
        fontsize="small",
        title="method (best / last AUP)",
    )
    fig.suptitle(f"Performance profiles: {len(result.tasks)} tasks, max_tau = {result.max_tau:g}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    logger.debug("wrote performance profiles to %s", path)
    return path
