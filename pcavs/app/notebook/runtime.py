"""Where the notebook runs: Colab or plain Jupyter, on a GPU or the CPU."""
from __future__ import annotations


def in_colab() -> bool:
    """True in a Colab kernel (its `google.colab` package imports)."""
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_status() -> str:
    """One line on the accelerator; with none, how to get one in Colab."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    advice = " In Colab: Runtime > Change runtime type > T4 GPU, then run all cells again." if in_colab() else ""
    return f"No GPU found: running on the CPU (about 1 s per frame).{advice}"
