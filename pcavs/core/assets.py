"""Files shipped inside the package: the demo media (see assets/DEMO_MEDIA.md for where each comes from)
and the face models."""
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_FACE = ASSETS / "demo_face.jpg"
DEMO_AUDIO = ASSETS / "demo_speech.wav"
DEMO_POSE = ASSETS / "demo_pose.mp4"


def model_file(name: str) -> Path:
    """A bundled LiteRT model, by name (`face_landmark`, ...)."""
    return ASSETS / f"{name}.tflite"
