"""PNG charts of tuning runs (best-so-far per kernel variant vs trials). matplotlib's Agg backend:
no display needed."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tuning_curves(tasks, path: Path, title: str) -> Path:
    """One panel per unit (GFLOP/s, GB/s): each task's best rate after each trial."""
    plt = _pyplot()
    units = sorted({t.unit for t in tasks})
    fig, axes = plt.subplots(len(units), 1, figsize=(10, 4.5 * len(units)), squeeze=False)
    for ax, unit in zip(axes[:, 0], units):
        for task in (t for t in tasks if t.unit == unit and t.history):
            trials, rates = zip(*task.history)
            ax.step(trials, rates, where="post", label=task.name)
        ax.set_xlabel("trials of this kernel variant")
        ax.set_ylabel(f"best {unit}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    axes[0, 0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
