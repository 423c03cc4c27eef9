"""pcavs: one photo + a voice (+ a head-motion video) -> a lip-synced talking-face video (PC-AVS, CVPR 2021)."""
from .errors import InputError, PcavsError, WeightsError
from .pipeline import Pipeline, Result, generate

__version__ = "0.1.0"
__all__ = ["generate", "Pipeline", "Result", "PcavsError", "InputError", "WeightsError", "__version__"]
