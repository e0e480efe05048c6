"""Which float type to compute in: bfloat16 where the hardware has it natively."""

from __future__ import annotations

from pathlib import Path

import torch


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where it pays: CUDA, or a CPU with native bf16 (AVX512-BF16/AMX)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.backends.mkldnn.is_available() and cpu_has_bf16() else None


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
