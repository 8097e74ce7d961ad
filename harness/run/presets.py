"""Built-in target presets: repositories laid out like a known project need no description, and a
description may start from one (`preset = "transformers"`) and override its keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# huggingface/transformers: tests/models/<name>/test_modeling_<name>.py, @slow gated by RUN_SLOW,
# the flash_attn_test marker, quantization tests under tests/quantization/<method>/.
TRANSFORMERS: dict[str, Any] = {
    "model_paths": "tests/models/{model}",
    "model_sources": ["src/transformers/models/{model}/**"],
    "core": ["src/transformers/modeling_*.py", "src/transformers/cache_utils.py",
             "src/transformers/generation/**", "src/transformers/integrations/**",
             "src/transformers/pytorch_utils.py"],
    "core_selects": "important",
    "install": "pip install -e .",
    "suites": {
        "slow": {"env": {"RUN_SLOW": "1"}},
        "fa2": {"markers": "flash_attn_test", "env": {"RUN_SLOW": "1"}, "runner_groups": ["single-gpu", "multi-gpu"]},
        "quantization": {"paths": ["tests/quantization"], "env": {"RUN_SLOW": "1"},
                         "runner_groups": ["single-gpu", "multi-gpu"]},
    },
}

PRESETS: dict[str, dict[str, Any]] = {"transformers": TRANSFORMERS}


def detect_preset(root: Path) -> tuple[dict[str, Any], str] | None:
    """The preset table a repository matches, with a description of why, or None."""
    models_dir = root / "tests" / "models"
    if models_dir.is_dir() and any(
        (d / f"test_modeling_{d.name}.py").is_file() for d in models_dir.iterdir() if d.is_dir()
    ):
        return TRANSFORMERS, "preset transformers (tests/models/<name>/test_modeling_<name>.py found)"
    return None
