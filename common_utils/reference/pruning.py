"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    03-Model_Compression/02-Labs/Lab-3.2-Pruning_Wanda_SparseGPT/02-Magnitude_vs_Wanda.ipynb
    03-Model_Compression/02-Labs/Lab-3.2-Pruning_Wanda_SparseGPT/03-SparseGPT_and_2_4.ipynb
    03-Model_Compression/02-Labs/Lab-3.2-Pruning_Wanda_SparseGPT/04-Structured_Depth_Pruning.ipynb

Edit the notebook's `#@save pruning` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 03-Model_Compression/02-Labs/Lab-3.2-Pruning_Wanda_SparseGPT/02-Magnitude_vs_Wanda.ipynb ----
import torch


def magnitude_scores(weight: torch.Tensor, gram: torch.Tensor | None = None) -> torch.Tensor:
    """Magnitude saliency |W_ij| (the gram is ignored: magnitude pruning looks at no data)."""
    return weight.abs()


def wanda_scores(weight: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """Wanda's saliency |W_ij| * ||X_j||_2 (Sun et al. 2023); ||X_j||_2^2 is the gram's diagonal XᵀX."""
    return weight.abs() * gram.diagonal().clamp_min(0).sqrt().to(weight.device)[None, :]


def prune_mask(scores: torch.Tensor, sparsity: float, per: str = "row") -> torch.Tensor:
    """Keep-mask (True = keep) that drops the lowest scores: round(sparsity * cols) in every output row
    (per="row", Wanda's comparison group) or round(sparsity * numel) over the whole matrix
    (per="layer", as torch.nn.utils.prune.l1_unstructured does)."""
    if per == "row":
        k = round(sparsity * scores.shape[1])
        drop = torch.topk(scores, k, dim=1, largest=False).indices
        return torch.ones_like(scores, dtype=torch.bool).scatter_(1, drop, False)
    if per == "layer":
        k = round(sparsity * scores.numel())
        mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
        mask[torch.topk(scores.reshape(-1), k, largest=False).indices] = False
        return mask.view_as(scores)
    raise ValueError(f"per must be 'row' or 'layer', not {per!r}")


def nm_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """N:M keep-mask: in every run of m consecutive input weights of a row keep the n highest scores
    (2:4 is what NVIDIA's sparse tensor cores accelerate, Mishra et al. 2021)."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"{cols} input features are not a multiple of m={m}")
    groups = scores.reshape(rows, cols // m, m)
    drop = torch.topk(groups, m - n, dim=-1, largest=False).indices
    return torch.ones_like(groups, dtype=torch.bool).scatter_(-1, drop, False).reshape(rows, cols)


def pruned_weights(linears: dict, grams: dict, score=wanda_scores, sparsity: float = 0.5,
                   per: str = "row", n_m: tuple[int, int] | None = None) -> dict:
    """{linear name: W * mask} for every linear: scores from `score(W, gram)`, then an N:M mask when
    `n_m` is given, else `prune_mask(scores, sparsity, per)`. Weights stay dense tensors."""
    out = {}
    for name, module in linears.items():
        weight = module.weight.detach()
        scores = score(weight.float(), grams[name])
        mask = nm_mask(scores, *n_m) if n_m else prune_mask(scores, sparsity, per)
        out[name] = weight * mask
    return out

# ---- from 03-Model_Compression/02-Labs/Lab-3.2-Pruning_Wanda_SparseGPT/03-SparseGPT_and_2_4.ipynb ----
import torch


def sparsegpt_prune(weight: torch.Tensor, gram: torch.Tensor, sparsity: float = 0.5,
                    n_m: tuple[int, int] | None = None, blocksize: int = 128,
                    percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT (Frantar & Alistarh 2023) for one linear: returns (pruned weight, keep-mask).

    Columns are visited left to right; each pruned weight's error is spread over the not-yet-visited
    columns of its row with the OBS update, using rows of U, the upper Cholesky factor of
    (XᵀX + λI)⁻¹. The mask is chosen adaptively per block of `blocksize` columns (lowest
    w² / U_jj² over the block), or per group of m columns for N:M."""
    W = weight.detach().clone().float()
    rows, cols = W.shape
    H = gram.detach().clone().float().to(W.device)
    dead = H.diagonal() == 0  # inputs that were always 0: their weights can go for free
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * H.diagonal().mean() * torch.eye(cols, device=W.device)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    keep = torch.ones_like(W, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, U1 = W[:, i1:i2].clone(), U[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        d = U1.diagonal()
        if n_m is None:
            scores = W1 ** 2 / d[None, :] ** 2
            k = round(sparsity * scores.numel())
            drop1 = torch.zeros(scores.numel(), dtype=torch.bool, device=W.device)
            drop1[torch.topk(scores.reshape(-1), k, largest=False).indices] = True
            drop1 = drop1.view_as(W1)
        else:
            drop1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            n, m = n_m or (0, 0)
            if n_m is not None and i % m == 0:  # N:M: choose this group's mask from the updated weights
                drop1[:, i:i + m] = ~nm_mask(W1[:, i:i + m] ** 2 / d[None, i:i + m] ** 2, n, m)
            w = W1[:, i]
            q = torch.where(drop1[:, i], torch.zeros_like(w), w)
            err = (w - q) / d[i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        keep[:, i1:i2] = ~drop1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return (W * keep).to(weight.dtype), keep

# ---- from 03-Model_Compression/02-Labs/Lab-3.2-Pruning_Wanda_SparseGPT/04-Structured_Depth_Pruning.ipynb ----
import torch

from common_utils.core.generation import forward_blocks


def block_influence(model, blocks, batch_size: int = 4) -> list[float]:
    """ShortGPT's Block Influence (BI) of every decoder block (Men et al. 2024).

    BI_i = 1 - mean over calibration tokens of cos(h_in, h_out), where h_in is the hidden state
    entering block i and h_out the one leaving it. A block whose output points where its input
    pointed changes little; removing it hurts least. Measured with forward hooks, one pass over
    `blocks` ([n, T] token ids) in batches of `batch_size`; returns one float per block."""
    layers = model.model.layers
    totals = [0.0] * len(layers)

    def hook(index: int):
        def record(module, args, output) -> None:
            h_in = args[0].float()
            h_out = (output[0] if isinstance(output, tuple) else output).float()
            totals[index] += (1 - torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1)).sum().item()
        return record

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        forward_blocks(model, blocks, batch_size)  # the hooks above record while it runs
    finally:
        for handle in handles:
            handle.remove()
    return [total / blocks.numel() for total in totals]


def drop_blocks(model, indices: list[int]):
    """Remove decoder blocks in place (depth pruning) and return the model.

    The kept blocks are renumbered (`self_attn.layer_idx`) so the KV cache still addresses one slot
    per remaining block, and `config.num_hidden_layers` / `config.layer_types` follow."""
    drop = set(indices)
    kept = [layer for i, layer in enumerate(model.model.layers) if i not in drop]
    for new_index, layer in enumerate(kept):
        layer.self_attn.layer_idx = new_index
    model.model.layers = torch.nn.ModuleList(kept)
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [t for i, t in enumerate(model.config.layer_types) if i not in drop]
    return model
