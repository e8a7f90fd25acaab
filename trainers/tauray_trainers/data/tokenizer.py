"""A byte-level tokenizer the project owns, so CLIP's text tower needs nothing downloaded.

Text is encoded as UTF-8; every byte is one token. Token ids::

    0            padding (PAD_ID)
    1            beginning of text (BOS_ID)
    2            end of text (EOS_ID)
    3 .. 258     the bytes 0..255 (byte b has id b + 3)

so ``vocab_size == 259``. Every row of :meth:`ByteTokenizer.__call__` is
``[BOS, bytes..., EOS, PAD, ...]`` of exactly ``context_length`` tokens; too long texts are cut
so that BOS and EOS always fit. A text tower that pools at the end-of-text token finds it at
``(tokens != PAD_ID).sum(-1) - 1`` (or ``tokens.eq(EOS_ID).int().argmax(-1)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
BYTE_OFFSET = 3
NUM_SPECIAL_TOKENS = BYTE_OFFSET


class ByteTokenizer:
    """UTF-8 byte tokenizer with padding, begin- and end-of-text tokens.

    Args:
        context_length: tokens per row, BOS and EOS included (>= 3).

    Raises:
        ValueError: if ``context_length`` < 3.
    """

    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    def __init__(self, context_length: int = 48) -> None:
        if (
            not isinstance(context_length, int)
            or isinstance(context_length, bool)
            or context_length < 3
        ):
            raise ValueError(
                f"context_length must be an int >= 3 (BOS, one byte, EOS), got {context_length!r}"
            )
        self._context_length = context_length

    @property
    def context_length(self) -> int:
        """Tokens per encoded row."""
        return self._context_length

    @property
    def vocab_size(self) -> int:
        """Number of token ids: 256 bytes + padding, BOS and EOS."""
        return 256 + NUM_SPECIAL_TOKENS

    def __repr__(self) -> str:
        return f"ByteTokenizer(context_length={self._context_length})"

    def encode(self, text: str) -> list[int]:
        """Token ids of one text: BOS, its (truncated) UTF-8 bytes, EOS; no padding.

        Raises:
            TypeError: if ``text`` is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        body = text.encode("utf-8")[: self._context_length - 2]
        return [BOS_ID, *(byte + BYTE_OFFSET for byte in body), EOS_ID]

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Encode texts into a padded id matrix.

        Args:
            texts: one text or a sequence of texts.

        Returns:
            int64 ``[N, context_length]`` (``N == 1`` for a single str).

        Raises:
            TypeError: if ``texts`` is neither a str nor a sequence of str.
        """
        if isinstance(texts, str):
            texts = [texts]
        elif not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
        tokens = torch.full((len(texts), self._context_length), PAD_ID, dtype=torch.int64)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return tokens

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Text of one row of ids: bytes between BOS and the first EOS, special tokens dropped.

        A multi-byte character cut by truncation decodes as U+FFFD.

        Args:
            ids: 1-D tensor or sequence of token ids.

        Raises:
            ValueError: if ``ids`` is not 1-D or holds an id outside ``[0, vocab_size)``.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(
                    f"decode takes one row (1-D ids), got shape {tuple(ids.shape)}; "
                    "use decode_batch for a matrix"
                )
            values = ids.tolist()
        else:
            values = [int(value) for value in ids]
        data = bytearray()
        for value in values:
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"token id {value} outside [0, {self.vocab_size})")
            if value == EOS_ID:
                break
            if value >= BYTE_OFFSET:
                data.append(value - BYTE_OFFSET)
        return data.decode("utf-8", errors="replace")

    def decode_batch(self, ids: torch.Tensor) -> list[str]:
        """Texts of every row of an ``[N, L]`` id matrix."""
        if ids.dim() != 2:
            raise ValueError(f"decode_batch takes [N, L] ids, got shape {tuple(ids.shape)}")
        return [self.decode(row) for row in ids]
