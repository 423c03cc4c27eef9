"""pcavs: one photo + a voice (+ a head-motion video) -> a lip-synced talking-face video (PC-AVS, CVPR 2021)."""
from .batch import batch
from .download import download_weights, ensure_weights
from .errors import InputError, NetworkError, OutOfMemoryError, PcavsError, WeightsError
from .evaluation import EvalResult, evaluate, evaluate_faces, plot_scores
from .options import Options
from .pipeline import Pipeline, Result, generate
from .syncnet import download_syncnet

__version__ = "0.1.0"
__all__ = [
    "generate", "batch", "Pipeline", "Result", "Options", "download_weights", "ensure_weights",
    "evaluate", "evaluate_faces", "EvalResult", "plot_scores", "download_syncnet",
    "PcavsError", "InputError", "WeightsError", "NetworkError", "OutOfMemoryError", "__version__",
]
