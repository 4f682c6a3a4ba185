"""2:4 structured sparsity: magnitude and SparseGPT masks, the gradual schedule and the
compressed form.

Groups are 4 consecutive weights along the reduction (input, ``K``) dimension of a ``[N, K]``
weight. A 2:4 mask zeroes the 2 smallest ``|w|`` of every group (ties keep the lower index).
"""

from __future__ import annotations

import torch
from torch import Tensor

from accelsim.formats import SPARSE_GROUP as GROUP
from accelsim.formats import SPARSE_KEPT as KEPT


def supports_2_4(in_features: int) -> bool:
    """A layer can be 2:4 only when its reduction size is a multiple of 4."""
    return in_features % GROUP == 0


def _groups(weight: Tensor) -> Tensor:
    n, k = weight.shape
    return weight.reshape(n, k // GROUP, GROUP)


def _group_pattern(weight: Tensor) -> Tensor:
    """Per-group 2:4 keep pattern [N, K/4, 4] (1 = kept) of the 2 largest magnitudes.

    An element's rank is the number of group members a stable descending sort puts before it
    (larger, or equal at a lower index); the 2 of rank < 2 are kept. One comparison per pair of
    columns i < j decides both ranks (j goes first iff it is larger, else i does), so 6
    comparisons select exactly what that sort would, several times faster than sorting groups
    of 4 (magnitudes are never NaN: a NaN weight has no rank).
    """
    # Each of the 4 columns contiguous: mask_2_4 of a 4096 x 1024 weight took 14 ms instead of
    # 28 on strided views (one thread).
    cols = _groups(weight.detach().abs().float()).permute(2, 0, 1).contiguous().unbind(0)
    # Column i starts ranked behind its i earlier columns and moves up each time it beats one.
    ranks = [torch.full_like(col, index, dtype=torch.uint8) for index, col in enumerate(cols)]
    for i in range(GROUP):
        for j in range(i + 1, GROUP):
            later_first = (cols[j] > cols[i]).view(torch.uint8)
            ranks[i] += later_first
            ranks[j] -= later_first
    return (torch.stack(ranks, dim=-1) < KEPT).float()


def mask_2_4(weight: Tensor) -> Tensor:
    """One-shot 2:4 mask (float 0/1, shape of ``weight``) keeping the 2 largest ``|weight|`` of
    each group; pass an importance of the same shape instead (e.g. ``|w| * ||x_k||``) to prune
    by it."""
    return _group_pattern(weight).reshape(weight.shape)


def obs_prune_2_4(weight: Tensor, gram: Tensor, damping: float = 0.01,
                  block: int = 128) -> tuple[Tensor, Tensor]:
    """SparseGPT's 2:4 pruning (Frantar & Alistarh, ICML 2023): (pruned weight, mask).

    ``gram`` is ``X^T X`` [K, K] of the layer's inputs. Columns are pruned left to right; at each
    group the 2 kept weights are those of largest ``w^2 / [H^-1]_kk^2`` (the OBS saliency, with
    ``H = gram + damping * mean(diag) * I``), and each column's pruning error is pushed onto the
    columns not yet visited through the Cholesky factor of ``H^-1``, so the kept weights
    reconstruct the dense layer's output on those inputs. Lazy block updates of ``block``
    columns (a multiple of 4) as in the reference code; float64 throughout.
    """
    n, k = weight.shape
    w = weight.detach().to(torch.float64).clone()
    h = gram.detach().to(torch.float64).clone()
    dead = torch.diagonal(h) == 0  # an input that is always 0: its weights cannot matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damping * torch.diagonal(h).mean() * torch.eye(k, dtype=torch.float64)
    h_inv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    mask = torch.ones_like(w)
    for start in range(0, k, block):
        stop = min(start + block, k)
        w_block = w[:, start:stop].clone()
        errors = torch.zeros_like(w_block)
        h_block = h_inv[start:stop, start:stop]
        for i in range(stop - start):
            if i % GROUP == 0:
                saliency = w_block[:, i:i + GROUP] ** 2 / torch.diagonal(h_block)[i:i + GROUP] ** 2
                mask[:, start + i:start + i + GROUP] = mask_2_4(saliency)
            column = w_block[:, i]
            kept = column * mask[:, start + i]
            errors[:, i] = (column - kept) / h_block[i, i]
            w_block[:, i:] -= errors[:, i:i + 1] * h_block[i:i + 1, i:]
            w_block[:, i] = kept  # exact zeros where pruned
        w[:, start:stop] = w_block
        w[:, stop:] -= errors @ h_inv[start:stop, stop:]
    return (w * mask).to(weight.dtype), mask.to(weight.dtype)


def gradual_mask_2_4(weight: Tensor, previous: Tensor, fraction: float) -> Tensor:
    """Mask with ``fraction`` of the groups 2:4-pruned, the rest dense.

    Groups already pruned in ``previous`` stay pruned with their pattern (masks only grow); new
    groups are taken cheapest first, by the magnitude their pruning removes (sum of the two
    smallest ``|w|``; index order breaks ties).
    """
    n, k = weight.shape
    groups_total = n * (k // GROUP)
    target = min(groups_total, round(fraction * groups_total))
    prev = _groups(previous)
    already = (prev.sum(-1) < GROUP).reshape(-1)
    pattern = _group_pattern(weight)
    cost = (_groups(weight.detach().abs().float()) * (1.0 - pattern)).sum(-1).reshape(-1)
    cost = torch.where(already, torch.full_like(cost, -1.0), cost)
    chosen = torch.zeros(groups_total, dtype=torch.bool)
    count = max(target, int(already.sum()))
    if count > 0:
        order = torch.sort(cost, stable=True).indices
        chosen[order[:count]] = True
    chosen = chosen.reshape(n, k // GROUP, 1)
    new = torch.where(chosen, pattern, torch.ones_like(pattern))
    keep_old = already.reshape(n, k // GROUP, 1)
    return torch.where(keep_old, prev, new).reshape(n, k)


def is_2_4(codes: Tensor) -> bool:
    """True iff ``K % 4 == 0`` and every group of 4 along K holds at least 2 exact zeros."""
    if codes.dim() != 2 or not supports_2_4(codes.shape[1]):
        return False
    zero = _groups(codes) == 0
    # Four column adds: a sum over a last dimension of 4 is several times slower.
    zeros = zero[..., 0].to(torch.uint8) + zero[..., 1] + zero[..., 2] + zero[..., 3]
    return bool((zeros >= GROUP - KEPT).all())


def compress_2_4(codes: Tensor) -> tuple[Tensor, Tensor]:
    """(values [N, K/2], indices [N, K/2] in 0..3) of a 2:4 code matrix.

    Per group the kept positions are those of the non-zero codes, filled up with the lowest-index
    zero positions when fewer than 2 are non-zero, ascending (docs/compression.md §6.2).
    """
    if not is_2_4(codes):
        raise ValueError("compress_2_4 needs every group of 4 to hold >= 2 zeros")
    groups = _groups(codes)
    # Sort key: non-zero first, then by position; the first 2 are the kept ones.
    position = torch.arange(GROUP).expand_as(groups)
    key = (groups == 0).long() * GROUP + position
    kept = torch.sort(key, dim=-1).indices[..., :KEPT]
    kept = torch.sort(kept, dim=-1).values
    values = torch.gather(groups, -1, kept)
    n = codes.shape[0]
    return values.reshape(n, -1), kept.reshape(n, -1)


def decompress_2_4(values: Tensor, indices: Tensor, in_features: int) -> Tensor:
    """Inverse of :func:`compress_2_4`: the dense ``[N, K]`` codes."""
    n = values.shape[0]
    dense = torch.zeros(n, in_features // GROUP, GROUP, dtype=values.dtype)
    dense.scatter_(-1, indices.reshape(n, -1, KEPT).long(), values.reshape(n, -1, KEPT))
    return dense.reshape(n, in_features)
