"""``pxpo studio``: paint likes and dislikes on a picture in the browser; PXPO refines the model
round by round (a local web app: FastAPI serves a plain HTML/JS canvas page and a JSON API).

    pxpo studio [--dir=runs/studio] [--host=127.0.0.1] [--port=7860] [--model=shapes-tiny]
    pxpo studio export --session=runs/studio/ID --out=DATASET    (`pxpo studio export --help`)

Each session lives in its own folder under ``--dir`` (``store.py``), the format ``pxpo refine``
reads and writes too; a round is pxpo refine's round (``pxpo.apps.rounds.train_round``), sized to show
its new picture within a minute on 2 CPU cores. ``pxpo studio export`` writes a session's marks,
pictures and prompts as a plain dataset (PNG + JSONL), as the page's export link does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pxpo.apps.rounds import RoundOptions
from pxpo.errors import ConfigError, MissingFile, UserError


@dataclass
class StudioConfig(RoundOptions):
    """the server and the rounds (pxpo refine's options, sized so that a round shows its new picture within a
    minute)"""

    num_steps: int = 10
    """DDIM steps of every picture and variation (pxpo refine: 20)"""
    epochs: int = 2
    """PXPO epochs per round (pxpo refine: 4)"""
    lr: float = 2e-4
    """AdamW learning rate (pxpo refine: 1e-4 over twice the epochs)"""
    dir: str = "runs/studio"
    """the sessions folder: one subfolder per session (studio.sqlite, pictures, marks, weights)"""
    host: str = "127.0.0.1"
    """the address to listen on (127.0.0.1: this machine only; 0.0.0.0 opens it to the network, with no login)"""
    port: int = 7860
    """the port to listen on"""


@dataclass
class ExportConfig:
    """the session and where its dataset goes"""

    session: str = ""
    """the session folder: runs/studio/ID, or a `pxpo refine --dir`"""
    out: str = ""
    """the dataset folder to write, new or empty: data.jsonl (one row per marked picture: round, seed, prompt,
    settings, files) and pictures/, marks/ (PNG)
    """


def export(argv: list[str]) -> int:
    """``pxpo studio export``: a session as a plain dataset (``Store.export``)."""
    from pxpo.config import parse_overrides
    from pxpo.apps.studio.legacy import LEGACY_STATE, sync_refine
    from pxpo.apps.studio.store import DB, Store

    cfg = parse_overrides(
        ExportConfig(),
        argv,
        prog="pxpo studio export",
        description="A session's marks, pictures and prompts as a plain dataset (PNG + JSONL).",
    )
    session, out = Path(cfg.session), Path(cfg.out)
    if not cfg.session or not cfg.out:
        raise UserError(
            "give the session folder and a new folder for the dataset: "
            "pxpo studio export --session=runs/studio/ID --out=DATASET"
        )
    if (session / LEGACY_STATE).is_file():
        sync_refine(session)
    if not (session / DB).is_file():
        raise MissingFile(
            f"{session} is not a session folder (no {DB}); sessions are the folders under "
            "pxpo studio's --dir, or a pxpo refine --dir"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out={out} exists and is not an empty folder; choose a new folder for the dataset")
    Store(session).export(out)
    rows = (out / "data.jsonl").read_text().count("\n")
    print(f"wrote {out / 'data.jsonl'} ({rows} marked pictures) with pictures/ and marks/")
    return 0


def check(cfg: StudioConfig) -> None:
    """Refuse bad options before anything loads, naming the option."""
    from pxpo.backends.registry import check_model_source
    from pxpo.apps.rounds import check_round_options

    if not 0 < cfg.port < 65536:
        raise ConfigError(f"--port={cfg.port}: use a port from 1 to 65535")
    check_round_options(cfg)
    check_model_source(cfg.model)


def main(argv: list[str]) -> int:
    import uvicorn

    from pxpo.config import parse_overrides
    from pxpo.apps.studio.app import create_app

    if argv[:1] == ["export"]:
        return export(argv[1:])
    cfg = parse_overrides(StudioConfig(), argv, prog="pxpo studio", description=__doc__)
    check(cfg)
    app = create_app(cfg)
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    print(
        f"pxpo studio: open http://{host}:{cfg.port}/ in a browser (sessions in {cfg.dir}; Ctrl-C stops; "
        "a round in progress is trained again on the next start)",
        flush=True,
    )
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return 0
