"""Split a zoo model's layers across devices (simple pipeline, one forward at a time).

``split_layers(model, ["cuda:0", "cuda:1"])`` keeps embeddings, final norm and head on the first
device and hands each device a contiguous chunk of ``model.layers``; forward pre-hooks move the
activations (and the attention context) to each module's device. Call ``setup_caches`` after
splitting so each layer's KV cache lands next to its weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.kv_cache import AttnContext


def _move(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, AttnContext):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    return obj


def _pre_hook(device: torch.device):
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return _move(args, device), _move(kwargs, device)

    return hook


def split_layers(model: nn.Module, devices: list[str | torch.device]) -> nn.Module:
    """Place ``model.layers`` in contiguous chunks on ``devices``; everything else on the first."""
    if not devices:
        raise ValueError("split_layers needs at least one device")
    devs = [torch.device(d) for d in devices]
    layers = model.layers
    per = -(-len(layers) // len(devs))
    if getattr(model, "cache_state", None) is not None:
        model.clear_caches()
    for child in model.children():
        if child is not layers:
            child.to(devs[0])
            child.register_forward_pre_hook(_pre_hook(devs[0]), with_kwargs=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    for i, layer in enumerate(layers):
        dev = devs[min(i // per, len(devs) - 1)]
        layer.to(dev)
        layer.register_forward_pre_hook(_pre_hook(dev), with_kwargs=True)
    model.devices = devs
    return model
