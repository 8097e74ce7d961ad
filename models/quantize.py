"""Weight quantization of zoo models: ``quantize(model, "int8" | "int4" | "bitnet")``.

Each method is an explicit handler that swaps ``nn.Linear`` layers for a quantized module:

* ``int8``: weight-only, symmetric per output channel: ``w ~= q * scale``, ``scale = absmax / 127``.
* ``int4``: weight-only, asymmetric per group of ``group_size`` inputs, two 4-bit values per byte
  (even column in the high nibble). Dequant: ``(q - 8) * scale + zero`` (gpt-fast / tinygemm
  convention), so on CUDA with bf16 the packed weight converts to PyTorch's int4 kernel layout
  (``_weight_int4pack_mm``); elsewhere it is unpacked and multiplied.
* ``bitnet``: BitNet b1.58 (see the BitNet doc): ternary weights with a per-tensor scale
  ``1 / mean|W|`` (``W_q = clamp(round(W * s), -1, 1)``) packed four to a byte, and int8 absmax
  activations per token (``s_x = 127 / max|x|``). Dequantization DIVIDES by the scale
  (``W ~= W_q / s``); the matmul runs on the integer values (exact in fp32) and divides once.

Tied output heads (gemma, gpt2) and MoE routers stay in full precision; bitnet also keeps the
output head, as BitNet does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("int8", "int4", "bitnet")


class QuantizedLinear(nn.Module):
    """What the quantized linear layers share: sizes, an optional bias in the model's dtype, and
    ``from_linear`` (a subclass registers its buffers in ``register_weights`` and fills them from a
    float weight in ``quantize_from``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        dtype: torch.dtype,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_weights(dtype, device)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None

    def register_weights(self, dtype: torch.dtype, device: torch.device | str | None) -> None:
        raise NotImplementedError

    def quantize_from(self, w: torch.Tensor) -> None:
        raise NotImplementedError

    @classmethod
    def from_linear(cls, lin: nn.Linear, **kwargs) -> QuantizedLinear:
        """The quantized copy of ``lin`` (same device; bias kept in its dtype)."""
        w = lin.weight.detach()
        mod = cls(lin.in_features, lin.out_features, lin.bias is not None, w.dtype, device=w.device, **kwargs)
        mod.quantize_from(w)
        if lin.bias is not None:
            mod.bias.data.copy_(lin.bias.detach())
        return mod

    def add_bias(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.bias is None else y + self.bias.to(y.dtype)


# ---------------------------------------------------------------- int8


def int8_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8: (q int8 (out, in), scale (out,) fp32) with ``w ~= q * scale``."""
    scale = w.float().abs().amax(dim=1).clamp(min=1e-8) / 127.0
    q = torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(QuantizedLinear):
    """Weight-only int8 linear layer (per-output-channel scales)."""

    kernel = "dequant"

    def register_weights(self, dtype: torch.dtype, device: torch.device | str | None) -> None:
        shape = (self.out_features, self.in_features)
        self.register_buffer("weight", torch.zeros(shape, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.ones(self.out_features, dtype=dtype, device=device))

    def quantize_from(self, w: torch.Tensor) -> None:
        q, scale = int8_quantize(w)
        self.weight.copy_(q)
        self.scales.copy_(scale)

    def dequantize(self) -> torch.Tensor:
        return self.weight.float() * self.scales.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Dequantize-then-multiply; torch.compile fuses it into one int8-reading matmul. (PyTorch
        # 2.11's CUDA ``_weight_int8pack_mm`` was measured 7.6x slower than bf16 for a 7B decode
        # step on an H200, see docs/GPU_RUNS.md, so it is not used.)
        y = F.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        return self.add_bias(y)


# ---------------------------------------------------------------- int4


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack values in [0, 15] (out, in) into uint8 (out, in/2), even column in the high nibble."""
    if q.shape[-1] % 2:
        raise ValueError("int4 packing needs an even number of columns")
    q = q.to(torch.uint8)
    return (q[:, ::2] << 4) | q[:, 1::2]


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: uint8 (out, in) with values in [0, 15]."""
    return torch.stack([packed >> 4, packed & 0xF], dim=-1).reshape(packed.shape[0], -1)


def int4_quantize(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group-wise asymmetric 4-bit: (q in [0, 15] uint8, scales, zeros (out, in/gs) bf16)."""
    out_f, in_f = w.shape
    if in_f % group_size:
        raise ValueError(f"in_features {in_f} is not a multiple of group_size {group_size}")
    g = w.float().reshape(out_f, in_f // group_size, group_size)
    lo, hi = g.amin(-1), g.amax(-1)
    scales = ((hi - lo).clamp(min=1e-6) / 15).to(torch.bfloat16)
    zeros = (lo + scales.float() * 8).to(torch.bfloat16)
    lo_q = zeros.float() - scales.float() * 8
    q = torch.round((g - lo_q[..., None]) / scales.float()[..., None]).clamp(0, 15)
    return q.reshape(out_f, in_f).to(torch.uint8), scales, zeros


def int4_dequantize(
    q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int
) -> torch.Tensor:
    out_f, in_f = q.shape
    g = q.float().reshape(out_f, in_f // group_size, group_size) - 8
    return (g * scales.float()[..., None] + zeros.float()[..., None]).reshape(out_f, in_f)


def pick_group_size(in_features: int, preferred: int = 128) -> int | None:
    """Largest of preferred, 128, 64, 32 dividing ``in_features`` (None: cannot quantize)."""
    for gs in (preferred, 128, 64, 32):
        if gs <= in_features and in_features % gs == 0:
            return gs
    return None


class Int4Linear(QuantizedLinear):
    """Weight-only int4 linear layer: packed nibbles plus bf16 scales and zeros per group."""

    def __init__(self, *args: Any, group_size: int, **kwargs: Any) -> None:
        """``QuantizedLinear``'s arguments, and the number of input columns sharing a scale and zero."""
        self.group_size = group_size  # before the buffers are registered
        super().__init__(*args, **kwargs)
        self.use_kernel = True
        self.kernel = "dequant"  # or "tinygemm" once the CUDA kernel ran
        self._packed_for_kernel: torch.Tensor | None = None

    def register_weights(self, dtype: torch.dtype, device: torch.device | str | None) -> None:
        out_f, n_groups = self.out_features, self.in_features // self.group_size
        self.register_buffer(
            "weight", torch.zeros(out_f, self.in_features // 2, dtype=torch.uint8, device=device)
        )
        self.register_buffer("scales", torch.ones(out_f, n_groups, dtype=torch.bfloat16, device=device))
        self.register_buffer("zeros", torch.zeros(out_f, n_groups, dtype=torch.bfloat16, device=device))

    @classmethod
    def from_linear(cls, lin: nn.Linear, group_size: int) -> Int4Linear:
        return super().from_linear(lin, group_size=group_size)

    def quantize_from(self, w: torch.Tensor) -> None:
        q, scales, zeros = int4_quantize(w, self.group_size)
        self.weight.copy_(pack_int4(q))
        self.scales.copy_(scales)
        self.zeros.copy_(zeros)

    def dequantize(self) -> torch.Tensor:
        return int4_dequantize(unpack_int4(self.weight), self.scales, self.zeros, self.group_size)

    def _kernel_ok(self, x: torch.Tensor) -> bool:
        return (
            self.use_kernel
            and x.is_cuda
            and x.dtype == torch.bfloat16
            and self.out_features % 8 == 0
            and self.in_features % 128 == 0
            and self.group_size in (32, 64, 128, 256)
            and hasattr(torch.ops.aten, "_weight_int4pack_mm")
        )

    def prepare_kernel(self) -> None:
        """Convert the packed weight to the CUDA int4 kernel's layout (done on first eager use)."""
        self._packed_for_kernel = torch.ops.aten._convert_weight_to_int4pack(self.weight, 8)
        self._scales_and_zeros = torch.stack([self.scales, self.zeros], dim=-1).transpose(0, 1).contiguous()
        self.kernel = "tinygemm"

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._packed_for_kernel = None  # new weights: convert again
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel_ok(x):
            stale = self._packed_for_kernel is None or self._packed_for_kernel.device != x.device
            if stale and not torch.compiler.is_compiling():
                self.prepare_kernel()
            if self._packed_for_kernel is not None and self._packed_for_kernel.device == x.device:
                flat = x.reshape(-1, self.in_features)
                y = torch.ops.aten._weight_int4pack_mm(
                    flat, self._packed_for_kernel, self.group_size, self._scales_and_zeros
                )
                y = y.reshape(*x.shape[:-1], self.out_features)
                return self.add_bias(y)
        y = F.linear(x, self.dequantize().to(x.dtype))
        return self.add_bias(y)


# ---------------------------------------------------------------- bitnet


def ternary_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BitNet b1.58 weights: (W_q in {-1, 0, 1} int8, scale fp32 scalar), ``scale = 1 / mean|W|``."""
    scale = 1.0 / w.float().abs().mean().clamp(min=1e-8)
    return torch.round(w.float() * scale).clamp(-1, 1).to(torch.int8), scale


def ternary_dequantize(w_q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``W_q / scale`` (the scale multiplied on the way in, so dequantizing divides)."""
    return w_q.float() / scale


def activation_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax int8 per token: (x_q in [-128, 127] as fp32 integers, scale (..., 1) = 127 / max|x|)."""
    scale = 127.0 / x.float().abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return torch.round(x.float() * scale).clamp(-128, 127), scale


def activation_dequantize(x_q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x_q / scale


def pack_ternary(w_q: torch.Tensor) -> torch.Tensor:
    """Pack {-1, 0, 1} (out, in) as 2-bit codes (value + 1), four per byte, column 4j+i at bits 2i."""
    out_f, in_f = w_q.shape
    codes = (w_q.to(torch.int16) + 1).to(torch.uint8)
    codes = F.pad(codes, (0, (-in_f) % 4), value=1).reshape(out_f, -1, 4)
    return codes[..., 0] | (codes[..., 1] << 2) | (codes[..., 2] << 4) | (codes[..., 3] << 6)


def unpack_ternary(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """Inverse of :func:`pack_ternary`: int8 (out, in) in {-1, 0, 1}."""
    codes = torch.stack([(packed >> s) & 0x3 for s in (0, 2, 4, 6)], dim=-1).reshape(packed.shape[0], -1)
    return codes[:, :in_features].to(torch.int8) - 1


class BitLinear(QuantizedLinear):
    """Ternary-weight, int8-activation linear layer (BitNet b1.58 inference)."""

    def register_weights(self, dtype: torch.dtype, device: torch.device | str | None) -> None:
        packed = (self.out_features, -(-self.in_features // 4))
        self.register_buffer("weight", torch.zeros(packed, dtype=torch.uint8, device=device))
        self.register_buffer("weight_scale", torch.ones((), dtype=torch.float32, device=device))

    def quantize_from(self, w: torch.Tensor) -> None:
        w_q, scale = ternary_quantize(w)
        self.weight.copy_(pack_ternary(w_q))
        self.weight_scale.copy_(scale)

    def ternary_weight(self) -> torch.Tensor:
        return unpack_ternary(self.weight, self.in_features)

    def dequantize(self) -> torch.Tensor:
        return ternary_dequantize(self.ternary_weight(), self.weight_scale)

    def integer_matmul(self, x_q: torch.Tensor) -> torch.Tensor:
        """x_q @ W_q^T on integer values, in fp32 (exact: |partial sums| < 2^24 for in < 131072)."""
        return torch.matmul(x_q.float(), self.ternary_weight().float().t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_q, x_scale = activation_quantize(x)
        y = (self.integer_matmul(x_q) / (x_scale * self.weight_scale)).to(x.dtype)
        return self.add_bias(y)


# ---------------------------------------------------------------- model walk


QUANTIZED_TYPES = (Int8Linear, Int4Linear, BitLinear)


def _tied(model: nn.Module) -> set[int]:
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}


def _handler(method: str, group_size: int) -> Callable[[str, nn.Linear], nn.Module | None]:
    def int8(name: str, lin: nn.Linear) -> nn.Module | None:
        return Int8Linear.from_linear(lin)

    def int4(name: str, lin: nn.Linear) -> nn.Module | None:
        gs = pick_group_size(lin.in_features, group_size)
        return None if gs is None else Int4Linear.from_linear(lin, gs)

    def bitnet(name: str, lin: nn.Linear) -> nn.Module | None:
        return None if name.rsplit(".", 1)[-1] in ("output", "lm_head") else BitLinear.from_linear(lin)

    handlers = {"int8": int8, "int4": int4, "bitnet": bitnet}
    if method not in handlers:
        raise ValueError(f"unknown quantization method {method!r}; expected one of {METHODS}")
    return handlers[method]


@torch.no_grad()
def quantize(model: nn.Module, method: str, *, group_size: int = 128) -> nn.Module:
    """Replace the model's linear layers in place with ``method``'s quantized modules; returns it.

    Skipped: linear layers sharing their weight with an embedding (tied heads), MoE routers
    (modules named ``gate``), layers whose shape the method cannot take (listed in
    ``model.quantization["skipped"]``).
    """
    handler = _handler(method, group_size)
    tied = _tied(model)
    done, skipped = [], []
    for name, lin in list(model.named_modules()):
        if not isinstance(lin, nn.Linear) or id(lin.weight) in tied or name.rsplit(".", 1)[-1] == "gate":
            continue
        new = handler(name, lin)
        if new is None:
            skipped.append(name)
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
        done.append(name)
    model.quantization = {"method": method, "quantized": done, "skipped": skipped}
    return model


def quantized_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes the quantized layers store, bytes the same weights take in bf16)."""
    stored = bf16 = 0
    for m in model.modules():
        if isinstance(m, QUANTIZED_TYPES):
            stored += sum(t.numel() * t.element_size() for t in list(m.buffers()) + list(m.parameters()))
            bf16 += 2 * (m.in_features * m.out_features + (m.out_features if m.bias is not None else 0))
    return stored, bf16
