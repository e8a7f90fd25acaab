"""SigLIP's pairwise sigmoid loss with negatives from every rank.

Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from tauray_trainers import distributed
from tauray_trainers.losses._checks import (
    Scalar,
    as_scalar_tensor,
    check_embeddings,
    check_same_shape,
    logit_scale,
    normalize,
)
from tauray_trainers.losses._groups import check_groups, group_sums

logger = logging.getLogger(__name__)

__all__ = ["SigLipLoss"]


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss: ``-sum_ij logsigmoid(label_ij * (cos_ij / t + b)) / N_global``.

    ``label_ij`` is +1 for the N matching image–text pairs and -1 for every other pair of the
    global batch. Each rank scores its images against all gathered texts (with gradient) and
    returns ``W / N`` times the sum over its rows, so the mean over ranks is the full-batch loss,
    each rank's embedding gradient is W times the single-process gradient of its rows (DDP's
    averaging restores the full-batch gradient), and the temperature and bias gradients averaged
    over ranks are the single-process ones. The paper's initialisation is t = 0.1 (logit scale
    10) and b = -10; both are usually learnable and are passed in on every call.

    Call:
        ``loss(image_emb, text_emb, temperature=t, bias=b, groups=g)`` with ``(n_local, D)``
        embeddings (row i of each is a pair; any norm, cosine similarity is used), ``t`` a float
        > 0 or a 0-dim tensor, ``b`` a float or a 0-dim tensor and ``g`` None or int
        ``(n_local,)``: with groups, ``label_ij`` is +1 for every pair of the global batch whose
        rows share a group id (captions that describe both images, as in UniCL, Yang et al.
        CVPR 2022), not only for (i, i). Returns a 0-dim tensor.

    Raises:
        TypeError / ValueError: on embeddings that are not paired ``(n, D)`` floating point
            tensors, a temperature that is not > 0, a non-finite bias, or groups that are not
            integers with one id per row.
    """

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        temperature: Scalar,
        bias: Scalar = 0.0,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_embeddings("image_emb", image_emb)
        check_embeddings("text_emb", text_emb)
        check_same_shape("image_emb", image_emb, "text_emb", text_emb)
        if groups is not None:
            groups = check_groups(groups, image_emb.shape[0], image_emb.device)
        images, texts = normalize(image_emb), normalize(text_emb)
        scale = logit_scale(temperature, images)
        shift = as_scalar_tensor(bias, "bias", images, positive=False)

        world = distributed.world_size()
        sizes = distributed.gather_sizes(images.shape[0], images.device)
        all_texts = distributed.all_gather_with_grad(texts, sizes)

        logits = torch.addmm(shift, images * scale, all_texts.T)
        if groups is None:
            positives = (images * texts).sum(dim=1) * scale + shift
        else:
            # Sum of z_ij over the texts j of row i's group: its summed text, count x bias.
            all_groups = distributed.gather_no_grad(groups, sizes)
            sums, counts = group_sums(all_texts, all_groups, groups)
            positives = (images * sums).sum(dim=1) * scale + counts * shift
        # Every pair as a negative, -logsigmoid(-z); then for the positives swap that for
        # -logsigmoid(z), which is smaller by exactly z. (F.softplus is not used: above its
        # threshold it returns z itself, off by up to e^-20.)
        summed = -F.logsigmoid(-logits).sum() - positives.sum()
        return summed * (world / sum(sizes))
