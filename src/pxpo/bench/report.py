"""The efficiency suite's report: a markdown table and one learning-curve PNG per task, from the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pxpo.bench.summary import split_method, summarise, verdicts
from pxpo.bench.tasks import get_task


def _s(values: list[float], signed: bool = True) -> str:
    if not values:
        return "-"
    fmt = "{:+.3f}" if signed else "{:.2f}"
    mean = fmt.format(np.mean(values))
    return f"{mean} ± {np.std(values):.3f}" if len(values) > 1 else mean


def curves_png(records: list[dict], task: str, path: Path) -> Path:
    """Target measure against reward queries: mean over seeds with a min-max band, one line per method."""
    from pxpo.plots import line_plot

    with line_plot(path, size=(5.5, 3.4), legend=True) as ax:
        methods = sorted({r["method"] + (f"@{r['tag']}" if r["tag"] else "") for r in records if r["task"] == task})
        for m in methods:
            rs = [r for r in records if r["task"] == task and r["method"] + (f"@{r['tag']}" if r["tag"] else "") == m]
            n = min(len(r["curve"]) for r in rs)
            q = [c["queries"] for c in rs[0]["curve"][:n]]
            y = np.array([[c["target"] for c in r["curve"][:n]] for r in rs])  # [seeds, points]
            ax.plot(q, y.mean(0), "-o", markersize=3, label=f"{m} ({len(rs)} seeds)")
            if len(rs) > 1:
                ax.fill_between(q, y.min(0), y.max(0), alpha=0.2)
        ax.set_xlabel("reward queries")
        ax.set_ylabel("target measure")
        ax.set_title(f"{task}: {get_task(task).about}", fontsize=8)
    return path


def tuning_lines(tune: list[dict], chosen: dict) -> list[str]:
    """The learning-rate sweep's section: every tuning run's gain at its end (B) and the chosen lr."""
    if not tune:
        return []
    lines = [
        "",
        "## Learning rates: a sweep on a tuning seed",
        "",
        "Each method's learning rate is the one with the best mean gain over the tuning tasks among "
        "healthy runs, on a seed the table above does not use (`--sweep-lr LR ... --tune-seed S`; "
        "cached under `tune/`, choice in `lr.json`). Chosen: "
        + ", ".join(f"{m} **{lr:g}**" for m, lr in sorted(chosen.items()))
        + ".",
        "",
        "| method | lr | task | seed | gain at B | healthy |",
        "|---|---|---|---|---|---|",
    ]

    def key(r):  # tag "lr<value>"
        return r["method"], float(r["tag"][2:]), r["task"]

    for r in sorted(tune, key=key):
        lines.append(
            f"| {r['method']} | {r['tag'][2:]} | {r['task']} | {r['seed']} | "
            f"{r['final']['target_gain']:+.3f} | {'yes' if r['final']['healthy'] else 'no'} |"
        )
    return lines


DEFAULT_TITLE = "Efficiency suite: PXPO against DDPO on per-pixel tasks"


def page_title(doc: Path) -> str:
    """The page's own title when it has one (pages of other caches are titled by hand, so that the docs
    site has no two pages of one name), else the suite's."""
    if doc.is_file():
        first = doc.read_text().split("\n", 1)[0]
        if first.startswith("# ") and first[2:].strip():
            return first[2:].strip()
    return DEFAULT_TITLE


def write_report(
    records: list[dict], budget: int, doc: Path, command: str, tune: list[dict] = (), chosen: dict | None = None
) -> Path:
    """``budget``: B in epochs (the default run's); the page states it in reward queries. ``tune``: the
    learning-rate sweep's records, ``chosen``: its choice per method."""
    rows = summarise(records, budget)
    queries = sorted({budget * r["queries_per_epoch"] for r in records})
    lines = [
        f"# {page_title(doc)}",
        "",
        f"Regenerate: `{command}` (runs what the cache lacks, then rebuilds this page; "
        "`--table` only rebuilds). Each run: shapes-tiny (`-parts` tasks: shapes-parts), `pxpo train`'s defaults "
        "with every timestep trained (`SUITE_RECIPE`) unless the command's `--set` says otherwise (the default "
        "recipe: the `@first-half-ode-lr2e-4` rows), only "
        "the reward, the captions and the method changed. Numbers are means ± std over seeds on 16 fixed evaluation "
        f"pictures. B = {'/'.join(map(str, queries))} reward queries ({budget} epochs, the default run). Target measure: the share of the region's "
        "pixels nearest to the target colour (object share for shrink), read by the model-free evaluator; "
        "gain is after minus before. Locality: mean |change| outside the region / inside (lower is more "
        "local). Shape kept: share of pictures whose shape reading is unchanged. TV: total variation "
        "after / before (noise > 1.5, blanking < 0.5). Healthy: TV in [0.5, 1.5] and, on named captions, "
        "shape kept >= 0.75 (on open captions the evaluator's shape reading is too unstable to decide). "
        "Definitions: `src/pxpo/bench/tasks.py`.",
        "",
        "| task | captions | method | seeds | before | gain at B | gain at end (queries) | eval-reward gain at B "
        "| locality | shape kept | TV | healthy | min/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        end = f"{_s(r['gain_end'])} ({r['end_queries']})" if r["gain_end"] else "-"
        lines.append(
            f"| {r['task']} | {r['captions']} | {r['method']} | {r['seeds']} | {r['target_before']:.3f} "
            f"| {_s(r['gain_B'])} | {end} | {_s(r['eval_gain_B'])} | {_s(r['locality'], False)} "
            f"| {_s(r['shape_kept'], False)} | {_s(r['tv_ratio'], False)} | {r['healthy']}/{r['seeds']} "
            f"| {r['minutes']:.1f} |"
        )
    v = verdicts(rows)
    if v:
        lines += [
            "",
            "## Sample efficiency: PXPO at B against DDPO at its whole budget",
            "",
            "Met when a PXPO objective's mean gain at B is at least DDPO's at the end of its run, "
            "the mean exceeds the std over seeds, and every seed stayed healthy; judged only with 3 "
            "or more seeds.",
            "",
        ]
        lines += [f"- **{t}**: {text}" for t, text in v.items()]
    for tag in sorted({split_method(r["method"])[1] for r in rows if r["method"].startswith("ddpo@")}):
        vt = verdicts(rows, tag)
        if vt:
            lines += [
                "",
                f"### Both methods on the `@{tag}` variant",
                "",
                f"The same rule, PXPO's and DDPO's runs both tagged `{tag}` (research, not the verdict above).",
                "",
            ]
            lines += [f"- **{t}**: {text}" for t, text in vt.items()]
    lines += tuning_lines(list(tune), chosen or {})
    lines += ["", "## Learning curves", ""]
    for task in sorted({r["task"] for r in rows}):
        png = curves_png(records, task, doc.parent / doc.stem / f"{task}.png")  # beside the page, in its own folder
        lines.append(f"![{task}]({doc.stem}/{png.name})")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")
    return doc
