"""A CLIP tokenizer whose vocabulary is the shapes world's words, built by hand (no download).

CLIP's byte-pair encoding splits a word into characters (the last one suffixed ``</w>``) and applies
merges in rank order. For each world word we add the left-to-right chain of merges that rebuilds it.
Because merges apply by global rank, a word whose chain starts with a pair another word merged
earlier ends as a few pieces (``green`` -> ``g re e n</w>``, since ``r e`` ranks first from ``red``);
most words are one token. Every piece is in the vocabulary, so encoding and decoding a caption is
exact, and the shipped text encoder was trained on exactly these token sequences.

Unknown words: any other word falls apart into the pieces of those merge chains, and characters
outside them map to the unknown token (``<|endoftext|>``). The tokenizer therefore never fails, but
the embedded model never saw such words, so pxpo checks prompts for the embedded model up front and
raises an error that names the unknown words (:func:`pxpo.testbed.world.unknown_words`).
"""

from __future__ import annotations

import json
from pathlib import Path

from pxpo.testbed.world import VOCABULARY

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Longest caption is 7 words + BOS + EOS = 9 tokens; 16 leaves room for user prompts.
MAX_LENGTH = 16


def _merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that rebuild ``word`` from its characters: r e -> re, re d</w> -> red</w>."""
    chars = list(word[:-1]) + [word[-1] + "</w>"]
    merges, left = [], chars[0]
    for right in chars[1:]:
        merges.append((left, right))
        left = left + right
    return merges


def write_tokenizer_files(directory: str | Path, vocabulary: tuple[str, ...] = VOCABULARY) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer config into ``directory`` (``vocabulary``:
    the words, the shapes world's by default; :data:`pxpo.testbed.scenes.VOCABULARY` for scenes)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    for word in vocabulary:
        for m in _merges(word):
            if m not in merges:
                merges.append(m)
            for piece in (m[0], m[1], m[0] + m[1]):  # BPE needs every piece in the vocabulary
                vocab.setdefault(piece, len(vocab))
        vocab.setdefault(word + "</w>", len(vocab))  # one-letter words have no merges
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    return directory


def build_tokenizer(directory: str | Path, vocabulary: tuple[str, ...] = VOCABULARY, max_length: int = MAX_LENGTH):
    """A ``CLIPTokenizer`` over a world's vocabulary, saved in ``directory`` (pipeline layout)."""
    from transformers import CLIPTokenizer

    directory = write_tokenizer_files(directory, vocabulary)
    tok = CLIPTokenizer(
        vocab=json.loads((directory / "vocab.json").read_text()),
        merges=[tuple(line.split()) for line in (directory / "merges.txt").read_text().splitlines()[1:] if line],
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        model_max_length=max_length,
    )
    tok.save_pretrained(directory)
    return tok
