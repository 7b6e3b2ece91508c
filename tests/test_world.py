"""The shapes world: determinism, exact labels, captions, splits; and the tokenizer over its words."""

import numpy as np
import pytest

from pxpo.testbed import world
from pxpo.testbed.tokenizer import build_tokenizer


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = world.sample(64, seed=3), world.sample(64, seed=3), world.sample(64, seed=4)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)


def test_labels_are_exact_and_agree_with_colours_and_captions():
    batch = world.sample(256, seed=1, split="all")
    for i in range(len(batch.captions)):
        shape, colour, background = world.parse_caption(batch.captions[i])
        assert (shape, colour, background) == (batch.shapes[i], batch.colours[i], batch.backgrounds[i])
        fg = batch.labels[i] > 0
        assert set(np.unique(batch.labels[i])) == {0, world.LABELS.index(shape)}
        assert np.all(batch.images[i][fg] == world.PALETTE[colour])
        assert np.all(batch.images[i][~fg] == world.PALETTE[background])
        assert 0.03 < fg.mean() < 0.6  # the object is visible and does not fill the image


def test_heldout_split_is_disjoint_and_every_word_is_still_trained():
    train, held = set(world.combinations("train")), set(world.combinations("heldout"))
    assert train.isdisjoint(held) and len(train) + len(held) == len(world.all_combinations())
    assert 0.05 < len(held) / len(world.all_combinations()) < 0.2
    for k in range(3):
        assert {c[k] for c in train} == {c[k] for c in world.all_combinations()}
    drawn = world.sample(512, seed=0, split="train")
    assert all((s, c, b) in train for s, c, b in zip(drawn.shapes, drawn.colours, drawn.backgrounds))


def test_world_has_the_required_variety():
    assert len(world.SHAPES) >= 4 and len(world.COLOURS) >= 8
    radii = world.sample(500, seed=2).radii
    assert radii.max() / radii.min() > 1.8


def test_bad_captions_and_unknown_words_are_named():
    with pytest.raises(ValueError, match="'pink' in"):
        world.parse_caption("a pink circle on a blue background")
    assert world.unknown_words("a red dragon on a blue background") == ["dragon"]


def test_tokenizer_round_trips_the_vocabulary(tmp_path):
    tok = build_tokenizer(tmp_path)
    single = 0
    for word in world.VOCABULARY:
        ids = tok(word).input_ids
        assert tok.unk_token_id not in ids[1:-1], word  # every piece is known
        assert tok.decode(ids[1:-1]).replace(" ", "") == word
        single += len(ids) == 3  # BOS, one token, EOS
    assert single >= len(world.VOCABULARY) // 2
    cap = world.caption("cross", "purple", "cyan")
    ids = tok(cap).input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True).strip() == cap
    unk = tok("a zebra").input_ids
    assert tok.unk_token_id in unk  # letters outside the world's words map to the unknown token


def test_every_caption_fits_the_text_encoder_without_truncation(tmp_path):
    tok = build_tokenizer(tmp_path)
    longest = max(len(tok(world.caption(*c)).input_ids) for c in world.all_combinations())
    assert longest <= tok.model_max_length
