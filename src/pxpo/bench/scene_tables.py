"""The scenes suite's tables and plots, from the cached run records of :mod:`pxpo.bench.scenes`:
every run (``table``), PXPO against DDPO at B and 3B queries (``efficiency``), variants on shared runs
(``compare``), and long runs' curves (``plot_curve``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pxpo.bench.scene_runs import B_EPOCHS
from pxpo.bench.scenes import OUT, TASKS, UNSEEN, VARIANTS


def mean_sd(v: list[float], fmt: str = "{:+.3f}") -> str:
    """Mean (± std where more than one) of the finite values, or "-" when there are none."""
    v = [x for x in v if x == x]
    return "-" if not v else fmt.format(np.mean(v)) + (f" ± {np.std(v):.3f}" if len(v) > 1 else "")


def load_records(out: Path = OUT) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/*/seed*.json"))]


def gain_at(record: dict, epoch: int) -> float:
    """The target gain at ``epoch`` from a record's curve (evaluations every few epochs; nan if none)."""
    at = {c["epoch"]: c["target"] for c in record["curve"]}
    return at[epoch] - at[0] if epoch in at and 0 in at else float("nan")


def efficiency(
    records: list[dict], pxpo: str, ddpo: str, tasks: list[str] | None = None, ddpo_at_b: bool = True
) -> str:
    """Markdown: per task, the ``pxpo`` variant's gain after B queries beside the ``ddpo`` variant's
    after B and after 3B (read on the curve of its 3B run), mean ± std over seeds; the verdict of B
    against 3B (``ahead``/``behind``: apart by more than both spreads, else ``tie``); and each one's
    locality at those points (the change outside over the change inside), the healthy runs of each and
    the seeds; then how many tasks each verdict has. ``ddpo_at_b`` False: "-" for DDPO at B (records
    whose ``final`` is not the curve's measure, e.g. on 128 pictures)."""
    lines = [
        f"| task | {pxpo} at B | {ddpo} at B | {ddpo} at 3B | B vs 3B | locality ({pxpo} B / {ddpo} 3B) | "
        "healthy | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts: list[tuple[str, bool]] = []  # (verdict, every run of both healthy)
    names = tasks or sorted({r["task"] for r in records}, key=lambda t: (t in UNSEEN, t))
    for t in names:
        px = [r for r in records if r["task"] == t and r["variant"] == pxpo and r["epochs"] == B_EPOCHS]
        dd = [r for r in records if r["task"] == t and r["variant"] == ddpo and r["epochs"] == 3 * B_EPOCHS]
        if px and dd:
            a, b = [r["final"]["target_gain"] for r in px], [r["final"]["target_gain"] for r in dd]
            gap, spread = np.mean(a) - np.mean(b), np.std(a) + np.std(b)
            verdict = "ahead" if gap > spread else "behind" if gap < -spread else "tie"
            loc = [[r["final"].get("locality", float("nan")) for r in g] for g in (px, dd)]
            ok = [sum(bool(r["final"].get("healthy")) for r in g) for g in (px, dd)]
            verdicts.append((verdict, ok == [len(px), len(dd)]))
            lines.append(
                f"| {t} | {mean_sd(a)} | {mean_sd([gain_at(r, B_EPOCHS) for r in dd]) if ddpo_at_b else '-'} | "
                f"{mean_sd(b)} | {verdict} | {mean_sd(loc[0], '{:.2f}')} / {mean_sd(loc[1], '{:.2f}')} | "
                f"{ok[0]}/{len(px)} / {ok[1]}/{len(dd)} | {len(px)} / {len(dd)} |"
            )
    count = {v: sum(x == v for x, _ in verdicts) for v in ("ahead", "tie", "behind")}
    ahead_ok = sum(v == "ahead" and ok for v, ok in verdicts)
    lines.append(
        f"\n{pxpo} at B against {ddpo} at 3B on {len(verdicts)} task{'s' * (len(verdicts) != 1)}: ahead on {count['ahead']} "
        f"({ahead_ok} with every run of both healthy), level on {count['tie']}, behind on {count['behind']}."
    )
    return "\n".join(lines)


def table(records: list[dict], tasks: list[str] | None = None) -> str:
    """Markdown: one row per (task, variant): target gain, locality, health, over seeds (mean ± std)."""
    lines = [
        "| task | variant | seeds | target before | gain | locality (out/in) | tv ratio | parts kept "
        "(after - before) | healthy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = tasks or sorted({r["task"] for r in records}, key=lambda t: (t in UNSEEN, t))
    runs = sorted({(r["variant"], r["epochs"]) for r in records}, key=lambda k: (list(VARIANTS).index(k[0]), k[1]))
    for t in names:
        for v, epochs in runs:
            rs = [r for r in records if r["task"] == t and r["variant"] == v and r["epochs"] == epochs]
            if not rs:
                continue
            f = [r["final"] for r in rs]
            label = v if epochs == B_EPOCHS else f"{v}, {epochs / B_EPOCHS:g}B"
            lines.append(
                f"| {t} | {label} | {len(rs)} | {mean_sd([x['target_before'] for x in f], '{:.3f}')} | "
                f"{mean_sd([x['target_gain'] for x in f])} | {mean_sd([x['locality'] for x in f], '{:.2f}')} | "
                f"{mean_sd([x['tv_ratio'] for x in f], '{:.2f}')} | "
                f"{mean_sd([x['parts_after'] - x['parts_before'] for x in f])} | "
                f"{sum(x['healthy'] for x in f)}/{len(f)} |"
            )
    return "\n".join(lines)


def compare(records: list[dict], variants: list[str], tasks: list[str] | None = None, bar: float = 0.15) -> str:
    """Markdown: the ``variants`` on the (task, seed) pairs that every one of them ran at B, so that each
    row is over the same runs' tasks and noise: mean gain and locality, healthy runs, and runs that gain
    at least ``bar`` and are healthy."""
    at_b = [r for r in records if r["epochs"] == B_EPOCHS and r["task"] in (tasks or TASKS)]
    keys = set.intersection(*({(r["task"], r["seed"]) for r in at_b if r["variant"] == v} for v in variants))
    lines = [
        f"| variant | runs ({len({k[0] for k in keys})} tasks) | mean gain | mean locality | healthy | "
        f"gain >= {bar} and healthy |",
        "|---|---|---|---|---|---|",
    ]
    for v in variants:
        f = [r["final"] for r in at_b if r["variant"] == v and (r["task"], r["seed"]) in keys]
        if not f:
            continue
        good = sum(x["healthy"] and x["target_gain"] >= bar for x in f)
        lines.append(
            f"| {v} | {len(f)} | {np.mean([x['target_gain'] for x in f]):+.3f} | "
            f"{np.mean([x['locality'] for x in f]):.2f} | {sum(x['healthy'] for x in f)}/{len(f)} | "
            f"{good}/{len(f)} |"
        )
    return "\n".join(lines)


def plot_curve(record: dict, path: Path) -> Path:
    """A long run's target gain against epochs (B marked), with its final health in the title."""
    from pxpo.plots import line_plot

    at = {c["epoch"]: c["target"] for c in record["curve"]}
    epochs = sorted(at)
    f = record["final"]
    with line_plot(path, size=(6, 3.2), dpi=100) as ax:
        ax.plot(epochs, [at[e] - at[0] for e in epochs], marker=".")
        ax.axvline(B_EPOCHS, color="grey", ls="--", lw=1)
        ax.text(B_EPOCHS, ax.get_ylim()[1], " B", va="top", color="grey")
        ax.set_xlabel("epoch (16 reward queries each)")
        ax.set_ylabel("target gain")
        ax.set_title(
            f"{record['task']}, {record['variant']}, seed {record['seed']}: end locality "
            f"{f['locality']:.2f}, tv {f['tv_ratio']:.2f}, parts {f['parts_after'] - f['parts_before']:+.2f}",
            fontsize=8,
        )
    return path


def by_seed(records: list[dict], variant: str, tasks: list[str] | None = None) -> str:
    """Markdown: one row per task of ``variant``'s runs at B, the seeds ordered by gain, each with the
    adaptive anchor's final weight (train.kl_coef after the last update) and whether it stayed healthy;
    the last column says whether the seed that gained least ended with the tightest anchor."""
    at_b = [r for r in records if r["variant"] == variant and r["epochs"] == B_EPOCHS]
    names = tasks or sorted({r["task"] for r in at_b}, key=lambda t: (t in UNSEEN, t))
    lines = ["| task | seeds by gain: gain (final kl_coef, healthy) | least gain, tightest anchor |", "|---|---|---|"]
    for t in names:
        rs = sorted((r for r in at_b if r["task"] == t), key=lambda r: r["final"]["target_gain"])
        if len(rs) < 2 or any(r.get("kl_coef_last") is None for r in rs):
            continue
        cells = [
            f"s{r['seed']} {r['final']['target_gain']:+.3f} ({r['kl_coef_last']:.3g}, "
            f"{'healthy' if r['final']['healthy'] else 'unhealthy'})"
            for r in rs
        ]
        tightest = max(rs, key=lambda r: r["kl_coef_last"]) is rs[0]
        lines.append(f"| {t} | {'; '.join(cells)} | {'yes' if tightest else 'no'} |")
    return "\n".join(lines)


def bars(records: list[dict], variant: str, tasks: list[str] | None = None, bar: float = 0.15) -> str:
    """Markdown: a variant's runs at B measured on the evaluation's 16 pictures and on ``final_large``'s
    (runs that have both), per task: mean gain, locality, healthy runs, and the gain bar (mean gain at
    least ``bar`` with every run healthy); then how many tasks pass it, and how many region or part
    tasks have a mean locality of at most 0.5."""
    rs = [r for r in records if r["variant"] == variant and r["epochs"] == B_EPOCHS and "final_large" in r]
    names = [t for t in (tasks or TASKS) if any(r["task"] == t for r in rs)]
    lines = [
        "| task | seeds | gain (16 / 128 pictures) | locality (16 / 128) | healthy (16 / 128) | gain bar (16 / 128) |",
        "|---|---|---|---|---|---|",
    ]
    passed, local = [0, 0], [0, 0]
    for t in names:
        cols = {}
        for i, key in enumerate(("final", "final_large")):
            f = [r[key] for r in rs if r["task"] == t]
            ok = np.mean([x["target_gain"] for x in f]) >= bar and all(x["healthy"] for x in f)
            passed[i] += ok
            local[i] += np.mean([x["locality"] for x in f]) <= 0.5
            cols[key] = (
                mean_sd([x["target_gain"] for x in f]),
                mean_sd([x["locality"] for x in f], "{:.2f}"),
                f"{sum(x['healthy'] for x in f)}/{len(f)}",
                "yes" if ok else "no",
            )
        a, b = cols["final"], cols["final_large"]
        n = sum(r["task"] == t for r in rs)
        lines.append(f"| {t} | {n} | {a[0]} / {b[0]} | {a[1]} / {b[1]} | {a[2]} / {b[2]} | {a[3]} / {b[3]} |")
    lines.append(
        f"\nGain bar met on {passed[0]} of {len(names)} tasks on 16 pictures and {passed[1]} on 128; "
        f"mean locality at most 0.5 on {local[0]} and {local[1]}."
    )
    return "\n".join(lines)
