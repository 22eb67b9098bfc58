"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    03-Model_Compression/02-Labs/Lab-3.1-Post_Training_Quantization/01-Quantization_Arithmetic.ipynb
    03-Model_Compression/02-Labs/Lab-3.1-Post_Training_Quantization/02-RTN_vs_GPTQ.ipynb
    03-Model_Compression/02-Labs/Lab-3.1-Post_Training_Quantization/04-Deploy_and_Export.ipynb

Edit the notebook's `#@save ptq` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 03-Model_Compression/02-Labs/Lab-3.1-Post_Training_Quantization/01-Quantization_Arithmetic.ipynb ----
import torch

CODE_DTYPE = torch.uint8  # codes of up to 8 bits are stored one per byte (04 packs two 4-bit codes per byte)


def quant_params(w: torch.Tensor, bits: int, symmetric: bool = False, float_zero: bool = False):
    """Scale and zero of each row of `w` over its last dimension (one row = one group of weights).

    Codes are unsigned, q in [0, 2^bits - 1], and w_hat = scale * (q - zero):
    - symmetric (absmax): scale = max|w| / (2^(bits-1) - 1), zero = 2^(bits-1)
    - asymmetric, integer zero-point: [min(w, 0), max(w, 0)] in 2^bits - 1 steps, zero = round(-min / scale)
    - asymmetric, float zero (float_zero=True): [min, max] in 2^bits - 1 steps, zero = -min / scale kept
      as a float, so min and max are exactly on the grid (llama.cpp's Q4_1: w = d * q + m)"""
    maxq = 2 ** bits - 1
    if symmetric:
        scale = w.abs().amax(dim=-1, keepdim=True) / (2 ** (bits - 1) - 1)
        zero = torch.full_like(scale, 2 ** (bits - 1))
    elif float_zero:
        low, high = w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
        scale = (high - low) / maxq
        zero = -low / scale.clamp_min(1e-12)
    else:
        low = w.amin(dim=-1, keepdim=True).clamp(max=0)
        high = w.amax(dim=-1, keepdim=True).clamp(min=0)
        scale = (high - low) / maxq
        zero = torch.round(-low / scale.clamp_min(1e-12))
    return scale.clamp_min(1e-12), zero


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool = False) -> torch.Tensor:
    """Integer codes (as floats) clamp(round(w / scale) + zero) in [0, 2^bits - 1] ([1, ...] if symmetric).

    As PyTorch's quantizers do, w is multiplied by 1/scale and rounded before the integer zero point is
    added: torch.round rounds .5 to even, so round(x + z) and round(x) + z differ on exact ties, which are
    common on a model already on a 4-bit grid. A float zero (Q4_1) is rounded together with x."""
    base = torch.round(zero)  # the whole zero point, unless float_zero made it fractional
    q = torch.round(w * (1.0 / scale) + (zero - base)) + base
    return torch.clamp(q, 1 if symmetric else 0, 2 ** bits - 1)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """w_hat = scale * (q - zero)."""
    return scale * (q - zero)


def to_groups(w: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
    """(..., out, in) -> (..., out, in // group_size, group_size); None = one group per row (per channel)."""
    in_features = w.shape[-1]
    g = in_features if group_size is None else group_size
    if in_features % g:
        raise ValueError(f"group_size {g} does not divide in_features {in_features}: pick 32, 64, 192 ... "
                         f"or per channel (None)")
    return w.unflatten(-1, (in_features // g, g))


def rtn_codes(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = False,
              float_zero: bool = False):
    """Round-to-nearest (RTN): codes (..., out, in) uint8, scale and zero (..., out, n_groups)."""
    groups = to_groups(w.detach().float(), group_size)
    scale, zero = quant_params(groups, bits, symmetric, float_zero)
    codes = quantize(groups, scale, zero, bits, symmetric)
    return codes.flatten(-2).to(CODE_DTYPE), scale.squeeze(-1), zero.squeeze(-1)


def dequantize_groups(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Weights from codes (..., out, in) and per-group scale/zero (..., out, n_groups)."""
    groups = to_groups(codes.float(), codes.shape[-1] // scale.shape[-1])
    return dequantize(groups, scale[..., None], zero[..., None]).flatten(-2)


def rtn(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = False,
        float_zero: bool = False) -> torch.Tensor:
    """Fake-quantized copy of w (quantize, then dequantize) in w's dtype."""
    return dequantize_groups(*rtn_codes(w, bits, group_size, symmetric, float_zero)).to(w.dtype)


def relative_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """||w - w_hat||_F / ||w||_F."""
    return ((w.float() - w_hat.float()).norm() / w.float().norm()).item()

# ---- from 03-Model_Compression/02-Labs/Lab-3.1-Post_Training_Quantization/02-RTN_vs_GPTQ.ipynb ----
import torch


@torch.no_grad()
def gptq(weight, gram, bits, group_size=None, symmetric=False, block_size=128, damp=0.01):
    """GPTQ (Frantar et al., 2022) of one weight matrix (out, in) given H ~ X^T X (in, in).

    Columns are quantized left to right; each column's rounding error, divided by the diagonal of the
    upper Cholesky factor of H^-1, is fed back into the columns not yet quantized (the OBS update).
    Returns (codes uint8 (out, in), scale, zero (out, n_groups)), the format of `rtn_codes`."""
    W = weight.detach().clone().float()
    H = gram.to(W.device, torch.float32).clone()
    columns = W.shape[1]
    dead = torch.diag(H) == 0  # inputs that were always zero: nothing to preserve
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(columns, device=W.device)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)  # H^-1 = U^T U
    g = columns if group_size is None else group_size
    if columns % g or (g < block_size and block_size % g):
        raise ValueError(f"group_size {g} must divide in_features {columns} and block_size {block_size}")
    codes = torch.zeros_like(W)
    scales, zeros = [], []
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = W[:, start:end].clone()
        errors = torch.zeros_like(block)
        U_block = U[start:end, start:end]
        for i in range(end - start):
            if (start + i) % g == 0:  # a new group starts: its scale/zero from the error-updated weights
                group = torch.cat([block[:, i:], W[:, end:]], dim=1)[:, :g]
                scale, zero = quant_params(group, bits, symmetric)
                scales.append(scale)
                zeros.append(zero)
            column = block[:, i:i + 1]
            q = quantize(column, scale, zero, bits, symmetric)
            codes[:, start + i:start + i + 1] = q
            error = (column - dequantize(q, scale, zero)) / U_block[i, i]
            block[:, i:] -= error @ U_block[i:i + 1, i:]  # feed the error into this block's later columns
            errors[:, i:i + 1] = error
        W[:, end:] -= errors @ U[start:end, end:]  # lazy batch update of every later column at once
    return codes.to(torch.uint8), torch.cat(scales, dim=1), torch.cat(zeros, dim=1)


def output_error(weight, weight_hat, gram):
    """tr(D G D^T) / tr(W G W^T) with D = W - W_hat: the relative squared error of the layer's outputs
    on the calibration tokens (what GPTQ minimises)."""
    G = gram.to(weight.device, torch.float32)
    delta = weight.float() - weight_hat.float()
    return ((delta @ G * delta).sum() / (weight.float() @ G * weight.float()).sum()).item()

# ---- from 03-Model_Compression/02-Labs/Lab-3.1-Post_Training_Quantization/02-RTN_vs_GPTQ.ipynb ----
import torch


def quantize_model(linears, gram, bits, group_size=None, method="gptq", symmetric=False, block_size=128, progress=True):
    """{linear name: (codes, scale, zero)} for each of `linears` ({name: nn.Linear}, e.g. decoder_linears(model)),
    by RTN or by GPTQ with the linear's own X^T X from `gram`.

    GPTQ treats every output row alike given H, so linears fed the same input (q/k/v, gate/up: they
    share one gram tensor) are stacked row-wise and quantized in one call: the same result, fewer steps."""
    from tqdm.auto import tqdm

    if method == "rtn":
        return {name: rtn_codes(m.weight, bits, group_size, symmetric) for name, m in linears.items()}
    families: dict[int, list[str]] = {}
    for name in linears:
        families.setdefault(id(gram[name]), []).append(name)
    result = {}
    for names in tqdm(families.values(), desc=f"{method} w{bits}", disable=not progress):
        stacked = torch.cat([linears[name].weight for name in names])
        codes, scale, zero = gptq(stacked, gram[names[0]], bits, group_size, symmetric, block_size)
        rows = 0
        for name in names:
            n = linears[name].out_features
            result[name] = (codes[rows:rows + n], scale[rows:rows + n], zero[rows:rows + n])
            rows += n
    return result


def dequantized_weights(quantized):
    """{name: weight} for `swapped_weights` from {name: (codes, scale, zero)}."""
    return {name: dequantize_groups(*parts) for name, parts in quantized.items()}

# ---- from 03-Model_Compression/02-Labs/Lab-3.1-Post_Training_Quantization/02-RTN_vs_GPTQ.ipynb ----
import torch


def save_quantized(path, quantized, bits, group_size, method):
    """Write {name: (codes, scale, zero)} and how they were made to one torch file, atomically."""
    from common_utils.core.artifacts import atomic_file

    with atomic_file(path) as tmp:
        torch.save({"bits": bits, "group_size": group_size, "method": method,
                    "weights": {name: {"codes": q, "scale": s, "zero": z} for name, (q, s, z) in quantized.items()}}, tmp)


def load_quantized(path):
    """(metadata, {name: (codes, scale, zero)}) from `save_quantized`'s file."""
    data = torch.load(path, weights_only=True)
    weights = {name: (w["codes"], w["scale"], w["zero"]) for name, w in data.pop("weights").items()}
    return data, weights

# ---- from 03-Model_Compression/02-Labs/Lab-3.1-Post_Training_Quantization/04-Deploy_and_Export.ipynb ----
import torch


def pack_int4(codes):
    """uint8 codes in [0, 15], (..., 2n) -> (..., n) bytes: low nibble = even column, high = odd column."""
    codes = codes.to(torch.uint8)
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_int4(packed):
    """Inverse of pack_int4."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2)


def save_packed(folder, model, quantized, dense_dtype=torch.bfloat16):
    """config.json + model.safetensors: packed int4 codes, fp16 scales, uint8 zeros for the quantized
    linears; every other parameter (embeddings, norms) in `dense_dtype`."""
    from pathlib import Path

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (codes, scale, zero) in quantized.items():
        tensors[f"{name}.qweight"] = pack_int4(codes).cpu().contiguous()
        tensors[f"{name}.scales"] = scale.to(torch.float16).cpu().contiguous()
        tensors[f"{name}.zeros"] = zero.to(torch.uint8).cpu().contiguous()
    skip = {f"{name}.weight" for name in quantized}
    for name, param in model.named_parameters():  # tied weights appear once
        if name not in skip:
            tensors[name] = param.detach().to(dense_dtype).cpu().contiguous()
    model.config.save_pretrained(folder)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "int4-packed", "group_size": str(
        next(iter(quantized.values()))[0].shape[1] // next(iter(quantized.values()))[1].shape[1])})


def load_packed(folder, dtype=torch.float32):
    """Rebuild the model from save_packed's folder, dequantizing every linear on load."""
    from pathlib import Path

    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    tensors = load_file(str(folder / "model.safetensors"))
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=dtype)
    state = {}
    for key, value in tensors.items():
        if key.endswith(".qweight"):
            name = key[: -len(".qweight")]
            state[f"{name}.weight"] = dequantize_groups(unpack_int4(value), tensors[f"{name}.scales"].float(),
                                                        tensors[f"{name}.zeros"].float())
        elif not key.endswith((".scales", ".zeros")):
            state[key] = value.to(dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"checkpoint mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.eval()

# ---- from 03-Model_Compression/02-Labs/Lab-3.1-Post_Training_Quantization/04-Deploy_and_Export.ipynb ----
import torch


class PackedInt4Linear(torch.nn.Module):
    """A linear layer that keeps packed int4 codes (+ fp16 scales, uint8 zeros) resident and dequantizes
    them at every call: 4-bit memory, but an unpack + dequantize per forward (no int4 kernel on CPU)."""

    def __init__(self, codes, scale, zero, bias=None):
        super().__init__()
        self.register_buffer("qweight", pack_int4(codes))
        self.register_buffer("scales", scale.to(torch.float16))
        self.register_buffer("zeros", zero.to(torch.uint8))
        self.bias = bias

    def forward(self, x):
        weight = dequantize_groups(unpack_int4(self.qweight), self.scales.float(), self.zeros.float())
        return torch.nn.functional.linear(x, weight.to(x.dtype), self.bias)


def with_packed_linears(model, quantized):
    """Replace each quantized nn.Linear of `model` (in place) by a PackedInt4Linear; returns the model."""
    modules = dict(model.named_modules())
    for name, (codes, scale, zero) in quantized.items():
        parent, _, child = name.rpartition(".")
        setattr(modules[parent], child, PackedInt4Linear(codes, scale, zero, modules[name].bias))
    return model
