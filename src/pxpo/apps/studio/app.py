"""The studio's web app: the page, its assets and a JSON API (FastAPI).

Hygiene: request bodies are bounded (``MAX_BODY``); marks arrive as numbers, one per picture
pixel, checked for count and range; no file path is ever taken from the client (sessions are
named by ids the server made and checked against a pattern, rounds and seeds are integers);
one round at a time, a second submission is answered 409 "busy"; every error is a JSON
``{"detail": "..."}`` in words, which the page shows.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from pxpo.apps.studio.worker import Busy, Runner
from pxpo.apps.studio.legacy import open_sessions
from pxpo.apps.studio.store import SESSION_ID, Store, StoreError, new_session_id

STATIC = Path(__file__).parent / "static"
MAX_BODY = 8 * 1024 * 1024  # bytes: marks (about 5 bytes a pixel in JSON) for 4 seeds of a 512x512 picture
MAX_SEED = 2**31 - 1
MAX_SEEDS_PER_ROUND = 4


class NewSession(BaseModel):
    prompt: str = Field("", max_length=300)


class SeedMarks(BaseModel):
    seed: int = Field(ge=0, le=MAX_SEED)
    values: list[int] = Field(max_length=512 * 512)  # -100 (disliked) .. 100 (liked), 0: no opinion


class Submission(BaseModel):
    parent: int = Field(ge=0)
    marks: list[SeedMarks] = Field(min_length=1, max_length=MAX_SEEDS_PER_ROUND)


def check_prompt(prompt: str, embedded: bool) -> str:
    from pxpo.testbed import world

    prompt = " ".join(prompt.split())
    if embedded:
        unknown = world.unknown_words(prompt)
        if unknown:
            raise StoreError(
                f"the model does not know the word{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(w) for w in unknown)}; it knows: {' '.join(world.VOCABULARY)}"
            )
    return prompt


def marks_tensor(m: SeedMarks, height: int, width: int) -> torch.Tensor:
    """Checked marks -> [H, W] in [-1, 1]."""
    if len(m.values) != height * width:
        raise StoreError(
            f"the marks for seed {m.seed} have {len(m.values)} values; the picture has "
            f"{height}x{width} = {height * width} pixels"
        )
    t = torch.tensor(m.values, dtype=torch.float32).view(height, width)
    if t.abs().max() > 100:
        raise StoreError(
            f"mark strengths run from -100 (disliked) to 100 (liked); seed {m.seed} holds {int(t[t.abs() > 100][0])}"
        )
    if not t.any():
        raise StoreError(f"nothing is marked on seed {m.seed}: paint what you like or dislike first")
    return t / 100


def create_app(cfg) -> FastAPI:
    """``cfg``: a :class:`pxpo.apps.studio.StudioConfig`."""
    from pxpo.backends.registry import is_embedded
    from pxpo.apps.rounds import round_settings
    from pxpo.apps.studio.engine import picture_size

    root = Path(cfg.dir)
    root.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    runner = Runner(root)
    height, width = picture_size(cfg.model)
    embedded = is_embedded(cfg.model)
    settings = round_settings(cfg)

    @asynccontextmanager
    async def lifespan(_):  # rounds committed before a stop or a crash are trained now
        for sid in open_sessions(root):
            runner.resume(Store(root / sid))
        yield

    app = FastAPI(title="pxpo studio", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.runner, app.state.root = runner, root

    @app.middleware("http")
    async def bounded_body(request: Request, call_next):
        if request.method in ("POST", "PUT", "PATCH"):
            size = request.headers.get("content-length")
            if size is None:
                return JSONResponse({"detail": "the request has no Content-Length; send the body in one piece"}, 411)
            if not size.isdigit() or int(size) > MAX_BODY:
                return JSONResponse({"detail": f"the request is too large ({size} bytes; at most {MAX_BODY})"}, 413)
        return await call_next(request)

    @app.exception_handler(StoreError)
    async def store_error(_, e: StoreError):
        return JSONResponse({"detail": str(e)}, 400)

    @app.exception_handler(Busy)
    async def busy(_, e: Busy):
        return JSONResponse({"detail": str(e)}, 409)

    @app.exception_handler(Exception)
    async def crash(_, e: Exception):
        return JSONResponse({"detail": f"the studio hit an error: {type(e).__name__}: {e}"}, 500)

    def store_of(sid: str) -> Store:
        if not SESSION_ID.match(sid) or not (root / sid / "studio.sqlite").is_file():
            raise NotFound(f"there is no session {sid!r} in {root.name}/")
        return Store(root / sid)

    @app.exception_handler(NotFound)
    async def not_found(_, e: NotFound):
        return JSONResponse({"detail": str(e)}, 404)

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info():
        from pxpo.testbed import world

        return {
            "model": cfg.model,
            "vocabulary": list(world.VOCABULARY) if embedded else None,
            "height": height,
            "width": width,
            "settings": settings,
            "sampler": {"num_steps": cfg.num_steps, "guidance": cfg.guidance, "eta": cfg.eta},
            "max_seeds_per_round": MAX_SEEDS_PER_ROUND,
        }

    @app.get("/api/sessions")
    def sessions():
        out = []
        for sid in open_sessions(root):
            s = Store(root / sid)
            out.append({"id": sid, "prompt": s.meta()["prompt"], "rounds": len(s.rounds()) - 1})
        return out

    @app.post("/api/sessions", status_code=201)
    def new_session(body: NewSession):
        prompt = check_prompt(body.prompt, embedded)
        sid = new_session_id()
        Store.create(
            root / sid,
            {
                "prompt": prompt,
                "model": cfg.model,
                "finetune": cfg.finetune,
                "num_steps": cfg.num_steps,
                "guidance": cfg.guidance,
                "eta": cfg.eta,
                "height": height,
                "width": width,
                "settings": settings,
            },
        )
        return {"id": sid, "prompt": prompt}

    @app.get("/api/sessions/{sid}")
    def session(sid: str):
        store = store_of(sid)
        resumed = runner.resume(store)
        return {"id": sid, **store.meta(), "rounds": store.rounds(), "resumed": resumed}

    @app.get("/api/sessions/{sid}/rounds/{rid}/pictures/{seed}.png")
    def picture(sid: str, rid: int, seed: int):
        store = store_of(sid)
        if not 0 <= seed <= MAX_SEED:
            raise StoreError(f"a seed is a whole number from 0 to {MAX_SEED}; got {seed}")
        path = store.picture_file(rid, seed)
        if path is None:
            status = store.round(rid)["status"]
            if status == "failed":
                raise StoreError(f"round {rid} failed, so it has no pictures; reopen an earlier round")
            if status != "done":
                raise StoreError(f"round {rid} is still training; its pictures come when it is done")
            with runner.use_model(store) as engine:
                path = engine.picture(rid, seed)
        return FileResponse(path, media_type="image/png")

    @app.get("/api/sessions/{sid}/rounds/{rid}/marks/{seed}.png")
    def marks(sid: str, rid: int, seed: int):
        return FileResponse(store_of(sid).marks_file(rid, seed), media_type="image/png")

    @app.post("/api/sessions/{sid}/rounds", status_code=202)
    def submit(sid: str, body: Submission):
        store = store_of(sid)
        meta = store.meta()
        seeds = [m.seed for m in body.marks]
        if len(set(seeds)) != len(seeds):
            raise StoreError("each seed can be marked once per round")
        marks = {m.seed: marks_tensor(m, meta["height"], meta["width"]) for m in body.marks}
        rid = runner.submit(store, lambda: store.submit(body.parent, marks, meta["settings"]))
        return {"round": rid}

    @app.get("/api/progress")
    def progress():
        return runner.progress

    @app.get("/api/sessions/{sid}/rounds/{rid}/weights.zip")
    def weights(sid: str, rid: int):
        store = store_of(sid)
        store.weights_file(rid)  # a round without weights is refused in words
        with tempfile.TemporaryDirectory() as tmp:
            with runner.use_model(store) as engine:
                engine.save_weights(rid, Path(tmp) / "weights")
            data = zip_dir(Path(tmp) / "weights")
        return Response(
            data,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="pxpo-{sid}-round{rid}.zip"'},
        )

    @app.get("/api/sessions/{sid}/export.zip")
    def export(sid: str):
        store = store_of(sid)
        with tempfile.TemporaryDirectory() as tmp:
            data = zip_dir(store.export(Path(tmp) / f"pxpo-{sid}"))
        return Response(
            data,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="pxpo-{sid}-dataset.zip"'},
        )

    return app


class NotFound(Exception):
    pass


def zip_dir(path: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(path.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(path))
    return buf.getvalue()
