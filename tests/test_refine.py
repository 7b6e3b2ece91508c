"""pxpo refine: strokes files, and a round that changes disliked pixels more than liked ones."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pxpo.cli import main
from pxpo.refine import RefineConfig, Session, read_strokes


def test_read_strokes_formats(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[0] = (0, 255, 0, 255)  # liked, full strength
    rgba[1] = (255, 0, 0, 255)  # disliked
    rgba[2] = (200, 40, 40, 51)  # disliked, alpha 0.2
    Image.fromarray(rgba, "RGBA").save(tmp_path / "s.png")
    m = read_strokes(tmp_path / "s.png", 4, 6)
    assert torch.equal(m[0], torch.ones(6)) and torch.equal(m[1], -torch.ones(6))
    assert torch.allclose(m[2], torch.full((6,), -0.2)) and torch.equal(m[3], torch.zeros(6))
    grey = np.array([[128, 255, 0]], np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    assert torch.allclose(read_strokes(tmp_path / "g.png", 1, 3), torch.tensor([[0.0, 1.0, -128 / 127]]).clamp(-1, 1))
    np.save(tmp_path / "n.npy", np.array([[0.5, -2.0]], np.float32))
    assert torch.equal(read_strokes(tmp_path / "n.npy", 1, 2), torch.tensor([[0.5, -1.0]]))
    with pytest.raises(ValueError, match="4x6.*64x64"):
        read_strokes(tmp_path / "s.png", 64, 64)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_strokes(tmp_path / "none.png", 4, 6)


def test_a_round_changes_disliked_pixels_more_than_liked_ones(tmp_path):
    d = tmp_path / "session"
    assert main(["refine", f"--dir={d}", "--prompt=a red square on a blue background", "--seed=3",
                 "--num_steps=10"]) == 0
    assert (d / "round_000.png").is_file()
    # the session redraws its picture exactly while the weights are unchanged
    first = torch.load(d / "traj_000.pt", weights_only=False).images
    assert torch.equal(Session(RefineConfig(dir=str(d))).draw().images, first)
    strokes = np.zeros((64, 64, 4), np.uint8)
    strokes[:, :32] = (255, 0, 0, 255)  # dislike the left half
    strokes[:, 32:] = (0, 255, 0, 255)  # like the right half
    Image.fromarray(strokes, "RGBA").save(tmp_path / "s0.png")
    assert main(["refine", f"--dir={d}", f"--strokes={tmp_path / 's0.png'}", "--epochs=4", "--variations=8"]) == 0
    for name in ("round_001.png", "compare_001.png", "params.pt", "strokes_000.pt"):
        assert (d / name).is_file(), name
    r = json.loads((d / "session.json").read_text())["rounds"][0]
    assert r["change_disliked"] > 1.5 * r["change_liked"], r
    assert r["reward_per_epoch"][-1] > r["reward_per_epoch"][0], r
    # the next round starts from the refined weights: its picture is round 1's
    again = Session(RefineConfig(dir=str(d)))
    assert torch.allclose(again.draw().images, torch.load(d / "traj_001.pt", weights_only=False).images, atol=1e-6)


def test_refine_user_errors(tmp_path, capsys):
    assert main(["refine", f"--dir={tmp_path / 'none'}", f"--strokes={tmp_path / 's.png'}"]) == 2
    assert "start one first" in capsys.readouterr().err
    assert main(["refine", f"--dir={tmp_path / 'x'}", "--prompt=a red dragon"]) == 2
    assert "dragon" in capsys.readouterr().err
