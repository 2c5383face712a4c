"""PNG charts: tuning runs (best-so-far per kernel variant vs trials) and benchmarks (each
contestant's speed relative to ours). matplotlib's Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def chart_path(value: str | None) -> Path | None:
    """--plot's file, checked before the work: a folder or a format matplotlib cannot write is refused
    now, not after a tuning run or a benchmark."""
    if not value:
        return None
    path = Path(value)
    plt = _pyplot()
    figure = plt.figure()
    formats = figure.canvas.get_supported_filetypes()
    plt.close(figure)
    if path.is_dir() or path.suffix.lstrip(".").lower() not in formats:
        raise ValueError(f"--plot {path}: give a file name ending in one of .{', .'.join(sorted(formats))}")
    return path


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tuning_curves(tasks, path: Path, title: str) -> Path:
    """One panel per unit (GFLOP/s, GB/s): each task's best rate after each trial."""
    plt = _pyplot()
    units = sorted({t.unit for t in tasks})
    fig, axes = plt.subplots(len(units), 1, figsize=(10, 4.5 * len(units)), squeeze=False)
    for ax, unit in zip(axes[:, 0], units):
        for task in (t for t in tasks if t.unit == unit and t.history):
            trials, rates, _ = zip(*task.history)
            ax.step(trials, rates, where="post", label=task.name)
        ax.set_xlabel("trials of this kernel variant")
        ax.set_ylabel(f"best {unit}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    axes[0, 0].set_title(title)
    return _save(plt, fig, path)


def bench_chart(result: dict, path: Path) -> Path:
    """Per benchmarked case (kernel, lengths, cache) a group of bars: each contestant's speed
    relative to ours (1.0 = ours; right of the line = faster than ours), labelled with its rate."""
    from compiler.benchmarks.summary import memory_bound

    plt = _pyplot()
    cases: dict[tuple, list[dict]] = {}
    for row in result["rows"]:
        key = (row["kernel"], ",".join(f"{k}={v}" for k, v in row["sizes"].items()), row["cache"])
        cases.setdefault(key, []).append(row)
    labels, values, colors, texts = [], [], [], []
    palette = {}
    for (kernel, sizes, cache), rows in cases.items():
        ours = next(r for r in rows if r["contestant"] == "ours")
        for row in rows:
            labels.append(f"{kernel[:40]} {sizes} {cache} | {row['contestant'][:32]}")
            values.append(ours["median_ms"] / row["median_ms"])
            colors.append(palette.setdefault(row["contestant"].split(" (")[0], f"C{len(palette) % 10}"))
            texts.append(f"{row['gbs']:.1f} GB/s" if memory_bound(row["sizes"]) else f"{row['gflops']:.1f} GFLOP/s")
        labels.append("")  # a gap between cases
        values.append(float("nan"))
        colors.append("white")
        texts.append("")
    fig, ax = plt.subplots(figsize=(12, 0.22 * len(labels) + 1.5))
    y = range(len(labels))
    ax.barh(list(y), values, color=colors)
    for yi, value, text in zip(y, values, texts):
        if text:
            ax.text(value, yi, f" {value:.2f}x  {text}", va="center", fontsize=6)
    ax.set_xscale("log")  # 2x faster and 2x slower sit equally far from ours
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(y), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("speed relative to ours (ours = 1, log scale)")
    machine = result.get("machine", {})
    ax.set_title(f"{result.get('target', '')} on {machine.get('cpu', '')}, {machine.get('threads', '')} threads, "
                 f"{machine.get('memory_bandwidth_gbs', '')} GB/s copy bandwidth", fontsize=9)
    return _save(plt, fig, path)


def modelled_chart(result: dict, path: Path) -> Path:
    """bench --core's rows as a chart, titled MODELLED: each kernel variant's share of the core's
    multiply-add peak per core (left), and with a model row the tokens/s of each contestant per
    core and step (right)."""
    plt = _pyplot()
    model_row = result.get("model_row")
    fig, axes = plt.subplots(1, 2 if model_row else 1, squeeze=False,
                             figsize=(16 if model_row else 10, 0.25 * len(result["rows"]) + 2))
    cores = list(result["cores"])
    kernels = list(dict.fromkeys((r["variant"], ",".join(f"{k}={v}" for k, v in r["sizes"].items()))
                                 for r in result["rows"]))
    share = {(r["variant"], ",".join(f"{k}={v}" for k, v in r["sizes"].items()), r["core"]): 100 * r["peak_share"]
             for r in result["rows"]}
    ax = axes[0, 0]
    height = 0.8 / len(cores)
    for index, core in enumerate(cores):
        ys = [position + index * height for position in range(len(kernels))]
        ax.barh(ys, [share.get((*kernel, core), 0.0) for kernel in kernels], height=height, label=core)
    ax.set_yticks([position + 0.4 - height / 2 for position in range(len(kernels))],
                  [f"{variant[:48]} {sizes}" for variant, sizes in kernels], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("% of the core's multiply-add peak (MODELLED)")
    ax.legend(fontsize=7)
    ax.set_title(f"MODELLED: {result['target']} kernels on ARM cores ({result['method'][:80]}...)", fontsize=8)
    if model_row:
        ax = axes[0, 1]
        steps = sorted({(r["phase"], r["core"]) for r in model_row["rows"]}, key=lambda s: (s[0] != "prefill", s[1]))
        contestants = list(dict.fromkeys(r["contestant"] for r in model_row["rows"]))
        rate = {(r["contestant"], r["phase"], r["core"]): r["tokens_per_s"] for r in model_row["rows"]}
        width = 0.8 / len(contestants)
        for index, contestant in enumerate(contestants):
            ax.bar([position + index * width for position in range(len(steps))],
                   [rate.get((contestant, *step), 0.0) for step in steps], width=width, label=contestant)
        ax.set_xticks([position + 0.4 - width / 2 for position in range(len(steps))],
                      [f"{phase}\n{core}" for phase, core in steps], fontsize=7)
        ax.set_ylabel("tokens/s, one core (MODELLED)")
        ax.legend(fontsize=7)
        ax.set_title(f"MODELLED model row: {model_row['gguf']}, prefill {model_row['prompt_tokens']} tokens "
                     "and one decode step", fontsize=8)
    return _save(plt, fig, path)
