"""A scripted person uses `pxpo studio` for 3 rounds, through its HTTP API (the page's own calls).

    python examples/studio_demo.py [--rounds=3] [--seeds=3] [--threads=2]

The person wants the object gone, as in examples/refine_demo.py: on every new picture they mark the
object (the shipped segmenter's mask, grown by 2 px) disliked and the background liked, and submit.
The studio runs with its defaults (`pxpo studio --help`). Writes docs/studio_demo.png (per round:
the picture, the marks on it) and docs/studio_demo.md: seconds from submit to the new picture, and
the mean |change| under disliked against liked marks, per round.
"""

from __future__ import annotations

import argparse
import io
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image

from pxpo.bench.refine import object_marks
from pxpo.images import labelled_rows, make_grid, save
from pxpo.apps.rounds import strokes_overlay
from pxpo.testbed.segment import load_segmenter
from pxpo.apps.studio import StudioConfig
from pxpo.apps.studio.app import create_app

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red square on a blue background"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[3])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=StudioConfig.epochs, help="PXPO epochs per round")
    ap.add_argument("--lr", type=float, default=StudioConfig.lr)
    ap.add_argument(
        "--kl_coef", type=float, default=StudioConfig.kl_coef, help="KL anchor on the liked pixels (0 = off)"
    )
    ap.add_argument("--docs", default=str(ROOT / "docs"), help="where studio_demo.md and .png go")
    ap.add_argument("--out", default=str(ROOT / "runs" / "studio_demo"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    cfg = StudioConfig(dir=args.out, threads=args.threads, epochs=args.epochs, lr=args.lr, kl_coef=args.kl_coef)
    seg = load_segmenter()
    rows, tiles, labels = [], [], []
    with TestClient(create_app(cfg)) as c:
        sid = c.post("/api/sessions", json={"prompt": PROMPT}).json()["id"]
        base = f"/api/sessions/{sid}"

        def picture(rid: int, seed: int) -> torch.Tensor:
            png = c.get(f"{base}/rounds/{rid}/pictures/{seed}.png").content
            return torch.from_numpy(np.array(Image.open(io.BytesIO(png)).convert("RGB"))).permute(2, 0, 1).float() / 255

        parent = 0
        for k in range(1, args.rounds + 1):
            pics = {s: picture(parent, s) for s in args.seeds}
            marks = {s: object_marks(p, seg) for s, p in pics.items()}
            for s in args.seeds:
                tiles += [pics[s], strokes_overlay(pics[s], marks[s][0])]
                labels += [f"r{parent} s{s}", "marks"]
            body = {
                "parent": parent,
                "marks": [{"seed": s, "values": (m * 100).int().flatten().tolist()} for s, (m, _) in marks.items()],
            }
            t0 = time.time()
            rid = c.post(f"{base}/rounds", json=body).json()["round"]
            while c.get("/api/progress").json()["state"] not in ("done", "failed"):
                time.sleep(0.1)
            after = {s: picture(rid, s) for s in args.seeds}  # what the page shows next
            seconds = time.time() - t0
            p = c.get("/api/progress").json()
            assert p["state"] == "done", p
            for s in args.seeds:
                m, area = marks[s]
                change = (after[s] - pics[s]).abs().mean(dim=0)
                rows.append(
                    (
                        k,
                        s,
                        seconds,
                        float(change[m < 0].mean()),
                        float(change[m > 0].mean()),
                        area,
                        object_marks(after[s], seg)[1],
                        p["rewards"][0],
                        p["rewards"][-1],
                    )
                )
            parent = rid
        for s in args.seeds:
            tiles.append(picture(parent, s))
            labels.append(f"r{parent} s{s}")
    per_row = 2 * len(args.seeds)
    grids = [
        make_grid(torch.stack(tiles[i : i + per_row]), nrow=per_row, scale=3) for i in range(0, len(tiles), per_row)
    ]
    save(
        labelled_rows(grids, [" | ".join(labels[i : i + per_row]) for i in range(0, len(labels), per_row)]),
        Path(args.docs) / "studio_demo.png",
    )
    table = "\n".join(
        f"| {k} | {s} | {sec:.1f} | {cd:.3f} | {cl:.3f} | {cd / max(cl, 1e-9):.1f} | {a0:.3f} -> {a1:.3f} "
        f"| {r0:.3f} -> {r1:.3f} |"
        for k, s, sec, cd, cl, a0, a1, r0, r1 in rows
    )
    doc = Path(args.docs) / "studio_demo.md"
    doc.write_text(f"""# A scripted person in `pxpo studio`

Made by `python examples/studio_demo.py --rounds={args.rounds} --seeds {" ".join(map(str, args.seeds))} --threads={args.threads} --epochs={args.epochs} --lr={args.lr} --kl_coef={args.kl_coef}`
through the studio's HTTP API ({cfg.num_steps} DDIM steps, {cfg.epochs} PXPO epochs x {cfg.variations} variations
per marked seed, lr {cfg.lr}, KL anchor on the liked pixels {cfg.kl_coef}, earlier marks replayed). Prompt: "{PROMPT}".
The person wants the object gone: on each new picture they mark the object (the shipped
segmenter's mask, grown by 2 px) disliked and the background liked.

![rounds](studio_demo.png)

Seconds: from the submission to the new picture served (what the page waits for), {args.threads}
torch threads, while other jobs shared the machine's 2 cores. Change: mean |change| per pixel (RGB
in [0, 1]) from the picture the marks were painted on, under disliked and liked marks.

| round | seed | seconds | change, disliked | change, liked | ratio | object area | strokes reward (first -> last epoch) |
|---|---|---|---|---|---|---|---|
{table}
""")
    print(doc.read_text())


if __name__ == "__main__":
    main()
