"""The byte-level tokenizer: round trips, truncation, padding and errors."""

from __future__ import annotations

import pytest
import torch

from tauray_trainers.data import ByteTokenizer
from tauray_trainers.data.tokenizer import BOS_ID, BYTE_OFFSET, EOS_ID, PAD_ID


def test_vocabulary_covers_every_byte_and_the_special_tokens() -> None:
    tokenizer = ByteTokenizer(context_length=16)
    assert tokenizer.vocab_size == 259
    assert {tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id} == {PAD_ID, BOS_ID, EOS_ID}
    tokens = tokenizer(bytes(range(256)).decode("latin-1"))
    assert int(tokens.max()) < tokenizer.vocab_size


@pytest.mark.parametrize(
    "text", ["a photo of the digit seven", "handwritten 7", "", "naïve café – 数字 ✓"]
)
def test_round_trip(text: str) -> None:
    tokenizer = ByteTokenizer(context_length=64)
    tokens = tokenizer(text)
    assert tokens.shape == (1, 64) and tokens.dtype == torch.int64
    assert tokenizer.decode(tokens[0]) == text
    body = text.encode("utf-8")
    assert tokens[0, 0] == BOS_ID
    assert tokens[0, 1 : 1 + len(body)].tolist() == [b + BYTE_OFFSET for b in body]
    assert tokens[0, 1 + len(body)] == EOS_ID
    assert (tokens[0, 2 + len(body) :] == PAD_ID).all()


def test_batch_is_padded_to_the_context_length() -> None:
    tokenizer = ByteTokenizer(context_length=12)
    tokens = tokenizer(["a", "abcdef", "abc"])
    assert tokens.shape == (3, 12)
    lengths = (tokens != PAD_ID).sum(dim=1)
    assert lengths.tolist() == [3, 8, 5]
    # The end-of-text token sits at length - 1 (where a text tower pools).
    assert tokens[torch.arange(3), lengths - 1].tolist() == [EOS_ID] * 3
    assert tokenizer.decode_batch(tokens) == ["a", "abcdef", "abc"]


def test_truncation_keeps_begin_and_end_tokens() -> None:
    tokenizer = ByteTokenizer(context_length=8)
    tokens = tokenizer("a long caption that does not fit")
    assert tokens.shape == (1, 8)
    assert tokens[0, 0] == BOS_ID and tokens[0, -1] == EOS_ID
    assert tokenizer.decode(tokens[0]) == "a long"  # 8 - BOS - EOS = 6 bytes


def test_truncated_multibyte_character_decodes_to_the_replacement_character() -> None:
    tokenizer = ByteTokenizer(context_length=4)  # room for 2 bytes of the 3-byte "数"
    assert tokenizer.decode(tokenizer("数")[0]) == "\ufffd"


def test_decode_accepts_lists_and_stops_at_end_of_text() -> None:
    tokenizer = ByteTokenizer(context_length=8)
    ids = [BOS_ID, ord("h") + BYTE_OFFSET, ord("i") + BYTE_OFFSET, EOS_ID, ord("x") + 3]
    assert tokenizer.decode(ids) == "hi"


@pytest.mark.parametrize("bad", [0, 2, -1, 3.5, True])
def test_invalid_context_length_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="context_length"):
        ByteTokenizer(context_length=bad)  # type: ignore[arg-type]


def test_invalid_inputs_are_rejected() -> None:
    tokenizer = ByteTokenizer(context_length=8)
    with pytest.raises(TypeError, match="texts"):
        tokenizer(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a str"):
        tokenizer(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="outside"):
        tokenizer.decode([BOS_ID, 300])
    with pytest.raises(ValueError, match="decode_batch"):
        tokenizer.decode(tokenizer(["a", "b"]))
