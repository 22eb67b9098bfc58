"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.2-Inference_Optimization/03-Quantized_and_Compiled.ipynb

Edit the notebook's `#@save inference_quant` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.2-Inference_Optimization/03-Quantized_and_Compiled.ipynb ----
def fake_int8_dynamic_linear(x, weight, bias=None, reduce_range: bool = True):
    """What torch.ao's dynamic int8 Linear computes, written in floating point: per-tensor symmetric int8
    weights, and the input quantized at call time to uint8 with one affine scale for the whole tensor
    (7 bits with reduce_range, as fbgemm on x86 does). One outlier sets the scale for every value."""
    import torch

    # PyTorch's quantizers multiply by the inverse scale; doing the same makes ties round the same way
    w_scale = weight.abs().max() / 127.5
    w_q = torch.clamp(torch.round(weight * (1.0 / w_scale)), -128, 127)
    q_max = 127 if reduce_range else 255
    low, high = torch.clamp(x.min(), max=0), torch.clamp(x.max(), min=0)
    x_scale = (high - low) / q_max
    zero = torch.clamp(torch.round(-low / x_scale), 0, q_max)
    x_q = torch.clamp(torch.round(x * (1.0 / x_scale)) + zero, 0, q_max)
    y = ((x_q - zero) * x_scale) @ (w_q * w_scale).T
    return y if bias is None else y + bias


def int8_dynamic(model):
    """A copy of `model` whose nn.Linear layers are torch.ao dynamic int8 (CPU kernels only: fbgemm/x86, qnnpack)."""
    import copy
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao (not installed)
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu(), {torch.nn.Linear}, dtype=torch.qint8)

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.2-Inference_Optimization/03-Quantized_and_Compiled.ipynb ----
import torch


class Int8WeightOnlyLinear(torch.nn.Module):
    """nn.Linear with int8 weights, one symmetric scale per output channel, dequantized at every call.

    Weight-only: activations keep their precision, so the error is the weights' rounding alone. It saves
    memory (4x vs fp32); it is fast only with a kernel that fuses the dequantization into the matmul."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
        # multiply by the inverse scale, as torch.quantize_per_channel does, so ties round the same way
        self.register_buffer("qweight", torch.clamp(torch.round(weight * (1.0 / scale)), -127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(weight.dtype))
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def dequantized_weight(self):
        return self.qweight.to(self.scale.dtype) * self.scale

    def forward(self, x):
        return torch.nn.functional.linear(x, self.dequantized_weight().to(x.dtype), self.bias)


def int8_weight_only(model):
    """A copy of `model` with every nn.Linear replaced by Int8WeightOnlyLinear (the LM head included)."""
    import copy

    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, Int8WeightOnlyLinear(child))
    return model


def to_bf16(model):
    """A bf16 copy of `model` (weights and activations); CPUs without native bf16 emulate it."""
    import copy

    return copy.deepcopy(model).to(torch.bfloat16)
