"""safetensors save / load of zoo models (config and family travel in the file's metadata)."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import torch
from torch import nn

from models._base import instantiate


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as exc:  # optional on GPU images without it
        raise ImportError("safetensors is not installed: pip install safetensors") from exc
    return st


def _family(model: nn.Module) -> str:
    return type(model).__module__.rsplit(".", 1)[-1]


def save(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the model's weights (tied tensors once) plus family and config to ``path``."""
    st = _safetensors()
    meta = {"family": _family(model), "format": "pt"}
    config = getattr(model, "config", None)
    if config is not None and dataclasses.is_dataclass(config):
        meta["config"] = json.dumps(dataclasses.asdict(config))
    meta.update(metadata or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    st.save_model(model, str(path), metadata=meta)
    return path


def load_into(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load weights from ``path`` into an existing model of the same shape."""
    st = _safetensors()
    device = next(model.parameters()).device
    missing, unexpected = st.load_model(model, str(path), strict=strict, device=str(device))
    if strict and (missing or unexpected):
        raise RuntimeError(f"state mismatch: missing {missing}, unexpected {unexpected}")
    return model


def _open(path: str | Path):
    _safetensors()
    from safetensors import safe_open

    return safe_open(str(path), framework="pt")


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors file."""
    with _open(path) as f:
        return dict(f.metadata() or {})


def load(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the (unquantized) model recorded in ``path`` and load its weights, in their dtype."""
    meta = read_metadata(path)
    if "family" not in meta or "config" not in meta:
        raise ValueError(f"{path} has no family/config metadata; use load_into() with a built model")
    mod = importlib.import_module(f"models.{meta['family']}")
    args = mod.ModelArgs(**json.loads(meta["config"]))
    with _open(path) as f:
        keys = list(f.keys())
        dtype = f.get_slice(keys[0]).get_dtype() if keys else "F32"
    model = instantiate(lambda: mod.Transformer(args), device, _DTYPES[dtype])
    return load_into(model, path).eval()


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
