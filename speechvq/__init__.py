"""speechvq: a VQ-VAE neural speech codec and voice-conversion toolkit.

After van den Oord et al. 2017, "Neural Discrete Representation Learning",
section 4.3. `import speechvq` stays light: torch and the model are imported
on first use of `SpeechVQ`, `load` and friends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from speechvq.config import ModelConfig
from speechvq.errors import SpeechVQError

__version__ = "0.1.0"

__all__ = ["ModelConfig", "SpeechVQ", "SpeechVQError", "__version__", "load"]

if TYPE_CHECKING:
    from speechvq.model import SpeechVQ
    from speechvq.modelfile import load


def __getattr__(name: str) -> Any:
    # Lazy: torch is imported only when a model is needed.
    if name == "SpeechVQ":
        from speechvq.model import SpeechVQ

        return SpeechVQ
    if name == "load":
        from speechvq.modelfile import load

        return load
    raise AttributeError(f"module 'speechvq' has no attribute {name!r}")
