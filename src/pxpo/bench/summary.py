"""The suite's cached runs summarised: gains at B and at the end, locality, health, and the verdict
of PXPO at B against DDPO at its whole budget (read by ``efficiency.py`` and ``report.py``)."""

from __future__ import annotations

import numpy as np

from pxpo.bench.tasks import get_task, healthy


def at_epoch(record: dict, epoch: int) -> dict | None:
    """The curve point after ``epoch`` epochs (None if the run did not evaluate there)."""
    return next((c for c in record["curve"] if c["epoch"] == epoch), None)


def _stat(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.mean(values):+.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:+.3f}"


def summarise(records: list[dict], budget: int) -> list[dict]:
    """One row per (task, method@tag): gains at B = ``budget`` epochs (and at the end for longer
    runs), locality, health."""
    rows = []
    keys = sorted({(r["task"], r["method"] + (f"@{r['tag']}" if r["tag"] else "")) for r in records})
    for task, method in keys:
        rs = [r for r in records if r["task"] == task and r["method"] + (f"@{r['tag']}" if r["tag"] else "") == method]
        sign = get_task(task).sign
        gain_b = [sign * (p["target"] - r["curve"][0]["target"]) for r in rs if (p := at_epoch(r, budget))]
        end = [r for r in rs if r["curve"][-1]["epoch"] > budget]
        gain_end = [r["final"]["target_gain"] for r in end]
        eval_b = [p["eval_reward"] - r["curve"][0]["eval_reward"] for r in rs if (p := at_epoch(r, budget))]
        rows.append(
            {
                "task": task,
                "method": method,
                "seeds": len(rs),
                "captions": rs[0]["captions"],
                "target_before": float(np.mean([r["final"]["target_before"] for r in rs])),
                "gain_B": gain_b,
                "gain_end": gain_end,
                "end_queries": end[0]["curve"][-1]["queries"] if end else None,
                "eval_gain_B": eval_b,
                "locality": [r["final"]["locality"] for r in rs if "locality" in r["final"]],
                "shape_kept": [r["final"]["shape_kept"] for r in rs],
                "tv_ratio": [r["final"]["tv_ratio"] for r in rs],
                "healthy": sum(healthy(get_task(task), r["final"]) for r in rs),  # today's rule, not the cached flag
                "minutes": float(np.mean([r["seconds"] for r in rs]) / 60),
            }
        )
    return rows


def split_method(method: str) -> tuple[str, str]:
    """``"pxpo-clipped@first-half"`` -> ``("pxpo-clipped", "first-half")``; untagged: tag ``""``."""
    base, _, tag = method.partition("@")
    return base, tag


def verdicts(rows: list[dict], tag: str = "") -> dict[str, str]:
    """Per task: does PXPO (either objective) after B reach DDPO's gain after its whole budget, with a
    gain positive beyond the spread (mean > std over seeds, every seed healthy)? Fewer than 3 seeds
    give no verdict, only the comparison. ``tag``: both sides run with that recipe variant (the
    untagged runs, the suite's recipe, by default)."""
    out = {}
    for task in sorted({r["task"] for r in rows}):
        ddpo = next((r for r in rows if r["task"] == task and split_method(r["method"]) == ("ddpo", tag)), None)
        # one recipe on both sides: other variants (method@tag) are research, not this verdict
        px = [
            r
            for r in rows
            if r["task"] == task
            and r["method"].startswith("pxpo")
            and split_method(r["method"])[1] == tag
            and r["gain_B"]
        ]
        if ddpo is None:  # no DDPO yet: a PXPO gain that is not positive beyond its spread fails anyway
            px = [r for r in px if len(r["gain_B"]) >= 3]
            if px and not any(np.mean(r["gain_B"]) > np.std(r["gain_B"]) and r["healthy"] == r["seeds"] for r in px):
                g = max((r["gain_B"] for r in px), key=np.mean)
                out[task] = (
                    f"no: PXPO's best gain at B, {np.mean(g):+.3f} ± {np.std(g):.3f}, is not positive beyond "
                    "its spread over seeds (DDPO not run)"
                )
            continue
        ref = ddpo["gain_end"] or ddpo["gain_B"]
        best = None
        for r in px:
            g = r["gain_B"]
            ok = np.mean(g) >= np.mean(ref) and np.mean(g) > np.std(g) and r["healthy"] == r["seeds"]
            if best is None or np.mean(g) > np.mean(best[1]):
                best = (r["method"], g, ok)
        if best:
            seeds = min(len(best[1]), len(ref))
            verdict = ("yes" if best[2] else "no") if seeds >= 3 else f"not judged ({seeds} seed{'s' * (seeds > 1)})"
            out[task] = (
                f"{verdict}: {best[0]} {np.mean(best[1]):+.3f} at B against DDPO "
                f"{np.mean(ref):+.3f} at {'its end' if ddpo['gain_end'] else 'B'}"
            )
    return out
