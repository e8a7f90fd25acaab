"""CLIP's text tower: a small pre-norm Transformer over byte-level token ids."""

from __future__ import annotations

import torch
from torch import nn


class TextTransformer(nn.Module):
    """Token + position embeddings, a pre-norm Transformer encoder, masked mean pooling.

    CLIP (Radford et al. 2021) reads the final token of a causally masked Transformer; with a
    byte-level tokenizer and short captions a bidirectional encoder with mean pooling over the
    non-padding tokens learns faster and needs no end-of-text convention.

    Args:
        vocab_size: number of token ids (the tokenizer's ``vocab_size``).
        context_length: tokens per caption L.
        width: model width.
        layers: Transformer layers.
        heads: attention heads; must divide ``width``.
        pad_id: the id used for padding (masked out of attention and pooling).

    Shapes: ``forward(tokens [N, L] long) -> [N, width]`` (unprojected; CLIP projects it).

    Raises:
        ValueError: ``width`` not divisible by ``heads``.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        context_length: int,
        width: int,
        layers: int,
        heads: int,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(
                f"model.text_width ({width}) must be divisible by model.text_heads ({heads})"
            )
        self.context_length = context_length
        self.pad_id = pad_id
        self.width = width
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        layer = nn.TransformerEncoderLayer(
            d_model=width,
            nhead=heads,
            dim_feedforward=4 * width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [N, L], got shape {tuple(tokens.shape)}")
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(
                f"token sequences of length {length} exceed model.context_length "
                f"({self.context_length})"
            )
        padding = tokens == self.pad_id
        padding[:, 0] = False  # an all-padding caption must not make attention NaN
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        x = self.encoder(x, src_key_padding_mask=padding)
        x = self.ln_final(x)
        keep = (~padding).unsqueeze(-1).to(x.dtype)
        return (x * keep).sum(dim=1) / keep.sum(dim=1)
