"""pcavs: one photo + a voice (+ a head-motion video) -> a lip-synced talking-face video (PC-AVS, CVPR 2021).

The package's names load on first use (PEP 562), so `import pcavs` costs nothing until one is
used: torch, OpenCV and the networks are imported by the call that needs them.
"""
from __future__ import annotations

import importlib
from typing import Any

from .core.version import __version__

# public name -> the module that defines it
_NAMES = {
    "generate": "generation.pipeline", "Pipeline": "generation.pipeline", "Result": "generation.pipeline",
    "Frame": "generation.stream", "FrameStream": "generation.stream", "Avatar": "generation.avatar",
    "batch": "batches.run", "Options": "core.options",
    "download_weights": "models.download", "ensure_weights": "models.download",
    "evaluate": "metrics.evaluate", "evaluate_faces": "metrics.evaluate", "EvalResult": "metrics.evaluate",
    "plot_scores": "metrics.evaluate", "download_syncnet": "models.download", "Restorer": "restore.restorer",
    "PcavsError": "core.errors", "InputError": "core.errors", "WeightsError": "core.errors",
    "NetworkError": "core.errors", "OutOfMemoryError": "core.errors", "serve": "app.serve",
}
__all__ = [*_NAMES, "__version__"]


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'pcavs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
