"""What a run leaves behind: config.yaml, metrics (JSONL + TensorBoard), sample grids, plots, weights."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import torch

from pxpo.config import save_yaml
from pxpo.images import labelled_rows, make_grid, save


class RunDir:
    """The run directory and its writers. Only the main process writes."""

    def __init__(self, path: Path, cfg, enabled: bool = True, tensorboard: bool = True, start_epoch: int = 0):
        """``start_epoch`` > 0 continues a resumed run: rows logged after its checkpoint (work the
        interruption lost, to be redone) are dropped from metrics.jsonl and TensorBoard."""
        self.path, self.enabled = Path(path), enabled
        self.tb = None
        if not enabled:
            return
        (self.path / "samples").mkdir(parents=True, exist_ok=True)
        save_yaml(dataclasses.replace(cfg, resume=""), self.path / "config.yaml")
        if start_epoch:
            self._truncate_metrics(start_epoch)
        self.metrics_file = open(self.path / "metrics.jsonl", "a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.path / "tb"), purge_step=start_epoch + 1 if start_epoch else None)

    def _truncate_metrics(self, start_epoch: int) -> None:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        keep = []
        for line in lines:
            try:
                if json.loads(line)["epoch"] <= start_epoch:
                    keep.append(line)
            except (ValueError, KeyError):
                continue  # a line cut short by a crash
        if len(keep) != len(lines):
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in keep))
            os.replace(tmp, path)

    def log(self, epoch: int, metrics: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
        self.metrics_file.write(json.dumps({"epoch": epoch, "time": round(time.time(), 2), **clean}) + "\n")
        self.metrics_file.flush()
        if self.tb is not None:
            for k, v in clean.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, epoch)

    def grid(self, name: str, images: torch.Tensor, nrow: int = 8) -> Path | None:
        if not self.enabled:
            return None
        return save(make_grid(images, nrow=nrow, scale=2), self.path / "samples" / name)

    def before_after(
        self, before: torch.Tensor, after: torch.Tensor, before_reward: float, after_reward: float, nrow: int = 8
    ) -> Path | None:
        if not self.enabled:
            return None
        img = labelled_rows(
            [make_grid(before, nrow, scale=2), make_grid(after, nrow, scale=2)],
            [f"before: eval reward {before_reward:.3f}", f"after: eval reward {after_reward:.3f}"],
        )
        return save(img, self.path / "before_after.png")

    def reward_curve(self) -> Path | None:
        """Plot train and eval reward per epoch from metrics.jsonl."""
        if not self.enabled:
            return None
        from pxpo.plots import line_plot

        rows = [json.loads(line) for line in (self.path / "metrics.jsonl").read_text().splitlines() if line]
        out = self.path / "reward_curve.png"
        with line_plot(out, size=(6, 3.5), dpi=120) as ax:
            for key, style in (("reward_mean", "-o"), ("eval_reward", "-s")):
                pts = [(r["epoch"], r[key]) for r in rows if key in r]
                if pts:
                    ax.plot(*zip(*pts), style, label=key.replace("_", " "), markersize=3)
            ax.set_xlabel("epoch")
            ax.set_ylabel("reward")
            ax.legend()
        return out

    def close(self) -> None:
        if self.enabled:
            self.metrics_file.close()
            if self.tb is not None:
                self.tb.close()
