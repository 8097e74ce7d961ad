"""Fused projections for the Llama-style families: one ``nn.Linear`` for q/k/v, one for gate/up.

A decode step at batch 1 is a chain of matrix-vector products bound by memory bandwidth; one
product over the concatenated weight ``[wq; wk; wv]`` (or ``[w1; w3]``) launches one kernel
instead of three (two) and reads the shared input once (gpt-fast does the same).

Numerics are kept: :func:`init_fused_parameters` draws each part of a fused weight with the seed
of its unfused name (``...attention.wq.weight``), so a seeded build holds the same weights as
before fusion, and :func:`accept_unfused_keys` lets state dicts written with separate
projections load into the fused modules.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from models._base import InitRule, init_parameters, instantiate, param_seed


class FusedLinear(nn.Linear):
    """``nn.Linear`` over the row-wise concatenation of several projections of one input.

    ``parts`` maps each unfused projection's name to its output width, in row order. The quantize
    walk treats it as any ``nn.Linear`` (it keeps no state besides its weight): callers split
    outputs with widths they keep themselves, so a quantized replacement splits the same way.
    """

    def __init__(self, in_features: int, parts: dict[str, int], bias: bool = False) -> None:
        if not parts or min(parts.values()) < 1:
            raise ValueError("FusedLinear needs at least one part, each of positive width")
        super().__init__(in_features, sum(parts.values()), bias=bias)
        self.parts = dict(parts)

    def extra_repr(self) -> str:
        parts = ", ".join(f"{name}={width}" for name, width in self.parts.items())
        return f"{super().extra_repr()}, parts=({parts})"


def _draw(p: torch.Tensor, kind: str, std: float, seed: int, name: str) -> None:
    """Exactly what ``init_parameters`` does to one parameter called ``name``."""
    if kind == "ones":
        p.fill_(1.0)
    elif kind == "zeros":
        p.zero_()
    elif kind == "normal":
        gen = torch.Generator(device=p.device).manual_seed(param_seed(seed, name))
        tmp = torch.empty(p.shape, device=p.device, dtype=torch.float32).normal_(0.0, std, generator=gen)
        p.copy_(tmp)
    else:
        raise ValueError(f"unknown init kind {kind!r} for {name}")


@torch.no_grad()
def init_fused_parameters(model: nn.Module, seed: int, rule: InitRule) -> None:
    """``init_parameters``, except that each :class:`FusedLinear` weight is drawn part by part,
    each under its unfused name and rule: the same values the unfused model had."""
    fused = {f"{n}.weight": (n, m) for n, m in model.named_modules() if isinstance(m, FusedLinear)}
    init_parameters(model, seed, lambda n, p: ("zeros", 0.0) if n in fused else rule(n, p))
    for module_name, module in fused.values():
        parent = module_name.rpartition(".")[0]
        row = 0
        for part, width in module.parts.items():
            name = f"{parent}.{part}.weight" if parent else f"{part}.weight"
            rows = module.weight[row : row + width]
            kind, std = rule(name, rows)
            _draw(rows, kind, std, seed, name)
            row += width
        if module.bias is not None:
            kind, std = rule(f"{module_name}.bias", module.bias)
            _draw(module.bias, kind, std, seed, f"{module_name}.bias")


def build_fused_model(
    cls: type[nn.Module],
    name: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> nn.Module:
    """``_base.build_model`` with :func:`init_fused_parameters` (the model's ``init_rule``)."""
    model = instantiate(lambda: cls.from_name(name), device, dtype)
    if torch.device(device).type != "meta":
        init_fused_parameters(model, seed, model.init_rule)
    return model.eval()


def accept_unfused_keys(module: nn.Module, fused: str, parts: Iterable[str]) -> None:
    """Let ``module.load_state_dict`` take ``<part>.<tensor>`` keys for its ``<fused>`` child.

    Every tensor name that all parts hold (``weight``, a bias, int8 ``scales``, ...) is
    concatenated along rows into ``<fused>.<tensor>``, unless the state dict already has that key
    or a part's tensor is a scalar (a per-tensor scale cannot be concatenated: left as is, so the
    load reports it).
    """
    names = tuple(parts)

    def hook(_module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
        first = f"{prefix}{names[0]}."
        suffixes = [k[len(first) :] for k in list(state_dict) if k.startswith(first)]
        for suffix in suffixes:
            keys = [f"{prefix}{part}.{suffix}" for part in names]
            target = f"{prefix}{fused}.{suffix}"
            if target in state_dict or not all(k in state_dict for k in keys):
                continue
            tensors = [state_dict[k] for k in keys]
            if min(t.dim() for t in tensors) == 0:
                continue
            state_dict[target] = torch.cat(tensors, dim=0)
            for k in keys:
                del state_dict[k]

    module.register_load_state_dict_pre_hook(hook)
