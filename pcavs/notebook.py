"""Helpers for the notebooks: a GPU check, upload pickers that default to the demo media, an inline player."""
from __future__ import annotations

import base64
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .demo import DEMO_AUDIO, DEMO_FACE, DEMO_POSE

POSE_CHOICES = ("pose video", "photo's own pose", "fixed pose (an image)")


def in_colab() -> bool:
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


@dataclass
class MediaPicker:
    """Upload widgets for face, audio and pose, plus the options; empty uploads fall back to the demo media."""

    widgets: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        import ipywidgets as w

        self.widgets = {
            "face": w.FileUpload(accept="image/*", description="Face photo"),
            "audio": w.FileUpload(accept="audio/*,video/*", description="Voice"),
            "pose": w.FileUpload(accept="video/*,image/*", description="Pose video"),
            "pose_source": w.Dropdown(options=POSE_CHOICES, description="Head pose"),
            "mode": w.Dropdown(options=("full", "crop", "grid"), description="Output"),
            "noise": w.Dropdown(options=("fixed", "random"), description="Noise"),
        }

    def _ipython_display_(self) -> None:
        from IPython.display import display
        import ipywidgets as w

        display(w.VBox(list(self.widgets.values())))

    def _saved(self, name: str, default: Path) -> Path:
        uploads = self.widgets[name].value
        if not uploads:
            return default
        item = uploads[0] if isinstance(uploads, (list, tuple)) else next(iter(uploads.values()))
        filename = item.get("name") or item.get("metadata", {}).get("name", name)
        target = Path(tempfile.mkdtemp(prefix="pcavs-upload-")) / Path(filename).name
        target.write_bytes(bytes(item["content"]))
        return target

    def job(self) -> dict:
        """Keyword arguments for `pcavs.generate`: the uploaded (or demo) files and the chosen options."""
        face = self._saved("face", DEMO_FACE)
        choice = self.widgets["pose_source"].value
        pose = {POSE_CHOICES[0]: self._saved("pose", DEMO_POSE), POSE_CHOICES[1]: None}.get(choice, self._saved("pose", face))
        return dict(face=face, audio=self._saved("audio", DEMO_AUDIO), pose=pose,
                    mode=self.widgets["mode"].value, noise=self.widgets["noise"].value)


def show_video(path: str | Path, width: int = 480):
    """An HTML5 player for an mp4 with a download link (works in Colab and Jupyter)."""
    from IPython.display import HTML

    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    name = Path(path).name
    return HTML(
        f'<video width="{width}" controls src="data:video/mp4;base64,{data}"></video>'
        f'<br><a download="{name}" href="data:video/mp4;base64,{data}">Download {name}</a>'
    )
