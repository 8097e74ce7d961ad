"""Byte-level tokenizer: ids 0..255 are bytes, then BOS, EOS and PAD. No files, no downloads."""

from __future__ import annotations

import torch


class ByteTokenizer:
    """UTF-8 bytes as tokens; every zoo vocabulary is at least :attr:`vocab_size` wide."""

    bos_id = 256
    eos_id = 257
    pad_id = 258
    vocab_size = 259

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        ids = list(text.encode("utf-8"))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Text of the byte ids (special and out-of-range ids dropped, bad UTF-8 replaced)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def batch_encode(
        self, texts: list[str], bos: bool = True, left_pad: bool = True, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids (B, T) and attention mask (B, T) with 1 for real tokens (left padding by default)."""
        rows = [self.encode(t, bos=bos) for t in texts]
        width = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(width - len(r), width) if left_pad else slice(0, len(r))
            ids[i, sl] = torch.tensor(r, dtype=torch.long)
            mask[i, sl] = 1
        return ids.to(device), mask.to(device)
