"""`ar report --plot FILE.png`: the progress of an experiment (and of the chain it ends) as one
picture. matplotlib is an optional extra (`autoresearch[plot]`), imported only here.

Every run is a dot at x = its number along the chain: discarded runs grey, kept ones green and
labelled with their note, crashes and timeouts a red cross at the bottom; the running best is a
step line, the baseline a dashed line, the noise floor (when one is set) a band around the best,
and each follow-up experiment starts after a dotted vertical separator.
"""

from __future__ import annotations

from pathlib import Path

from ar import chain, results_log
from ar.errors import ArError
from ar.layout import ExperimentPaths, ProjectPaths
from ar.settings import load_session
from ar.state import FAILURE_STATUSES
from ar.verdict import noise_floor

KEPT, DISCARDED, FAILED, BEST = "#2ca02c", "#9e9e9e", "#d62728", "#1f77b4"
LABEL_CHARS = 40
LABELS = 20  # kept runs labelled at most (the latest ones), so the picture stays readable


def experiments_of(paths: ExperimentPaths) -> list[ExperimentPaths]:
    """The chain up to this experiment, oldest first; just this one outside a chain."""
    project = ProjectPaths(paths.root)
    trail = chain.normalized(chain.read_raw(project))["chain_trail"]
    if paths.slug not in trail:
        return [paths]
    slugs = trail[: trail.index(paths.slug) + 1]
    return [project.experiment(slug) for slug in slugs if project.experiment(slug).results.exists()]


def write_plot(paths: ExperimentPaths, target: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display, no GUI toolkit
        import matplotlib.pyplot as plt
    except ImportError:
        raise ArError("--plot needs matplotlib, which is not installed with autoresearch",
                      "install the extra: `uv tool install 'autoresearch[plot] @ git+<url>'`, or `pip install matplotlib` into its environment") from None
    session = load_session(paths)
    direction = session.experiment.primary_direction
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    x = 0
    best = None  # (x, value) of the running best along the whole chain
    steps_x, steps_y, kept, failed_x = [], [], [], []
    baseline = None
    experiments = experiments_of(paths)
    for index, experiment in enumerate(experiments):
        if index:
            ax.axvline(x + 0.5, color="#555555", linestyle=":", linewidth=1)
            ax.text(x + 0.7, 1.0, experiment.slug, transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="#555555")
        for row in results_log.iter_rows(experiment.results):
            x += 1
            value = row["value"]
            if row["status"] in FAILURE_STATUSES or value is None:
                failed_x.append(x)
            elif row["verdict"] == "advance":
                kept.append((x, value, row["note"]))
                ax.scatter([x], [value], color=KEPT, s=36, zorder=3)
            else:
                ax.scatter([x], [value], color=DISCARDED, s=16, zorder=2)
            if row["verdict"] == "advance" and value is not None:
                best = (x, value)
                baseline = value if baseline is None else baseline
            if best is not None:
                steps_x.append(x)
                steps_y.append(best[1])
    if steps_x:
        ax.step(steps_x, steps_y, where="post", color=BEST, linewidth=1.6, label="running best", zorder=1)
        floor = noise_floor(steps_y[-1], session.loop.min_delta, session.loop.min_rel_delta)
        if floor > 0:
            ax.fill_between(steps_x, [y - floor for y in steps_y], [y + floor for y in steps_y], step="post",
                            color=BEST, alpha=0.12, label="noise floor", linewidth=0)
    if baseline is not None:
        ax.axhline(baseline, color="#777777", linestyle="--", linewidth=1, label="baseline")
    if failed_x:
        ax.scatter(failed_x, [0.02] * len(failed_x), transform=ax.get_xaxis_transform(), marker="x", color=FAILED,
                   s=40, label="crash / timeout / invalid", zorder=3)
    for x_kept, value, note in kept[-LABELS:]:
        label = note if len(note) <= LABEL_CHARS else note[: LABEL_CHARS - 1] + "…"
        ax.annotate(label, (x_kept, value), textcoords="offset points", xytext=(4, 6), fontsize=7, color="#1b5e20", rotation=20)
    values = [v for v in (*steps_y, *(k[1] for k in kept)) if v is not None]
    if values and min(values) > 0 and max(ax.get_ylim()[1], max(values)) / min(values) > 100:
        ax.set_yscale("log")  # a diverged run must not flatten every other point into one line
    ax.set_xlabel("run")
    ax.set_ylabel(f"{session.experiment.primary_metric} ({'lower' if direction == 'min' else 'higher'} is better)")
    ax.set_title(f"{' -> '.join(e.slug for e in experiments)}: {x} runs, {len(kept)} kept")
    ax.grid(True, alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    plt.close(fig)
    return str(target)
