"""speechvq: a VQ-VAE neural speech codec and voice-conversion toolkit.

After van den Oord et al. 2017, "Neural Discrete Representation Learning",
section 4.3. `import speechvq` stays light: torch and the model are imported
on first use of `SpeechVQ` and `load`. The layers of the package are
described in docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

from speechvq.config import ModelConfig
from speechvq.errors import SpeechVQError
from speechvq.version import __version__

__all__ = ["ModelConfig", "SpeechVQ", "SpeechVQError", "__version__", "load"]


def __getattr__(name: str) -> Any:
    # Lazy: torch is imported only when a model is needed.
    if name == "SpeechVQ":
        from speechvq.models.model import SpeechVQ

        return SpeechVQ
    if name == "load":
        from speechvq.inference.loading import load

        return load
    raise AttributeError(f"module 'speechvq' has no attribute {name!r}")
