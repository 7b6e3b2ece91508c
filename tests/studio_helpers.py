"""What the studio's tests share: a tiny configuration, marks, and waiting for a round."""

import time

PROMPT = "a red square on a blue background"
TINY = dict(num_steps=3, epochs=1, variations=2, threads=1)


def half_marks(seed=3):
    """Dislike the top half, like the bottom half."""
    return {"seed": seed, "values": [-100] * 2048 + [60] * 2048}


def wait_done(c, rid, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        p = c.get("/api/progress").json()
        if p.get("round") == rid and p["state"] in ("done", "failed"):
            return p
        time.sleep(0.2)
    raise AssertionError(f"round {rid} did not finish: {p}")


def new_session(c, prompt=PROMPT):
    r = c.post("/api/sessions", json={"prompt": prompt})
    assert r.status_code == 201, r.text
    return r.json()["id"]
