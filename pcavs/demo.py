"""The bundled demo media (see assets/DEMO_MEDIA.md for where each file comes from)."""
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_FACE = ASSETS / "demo_face.jpg"
DEMO_AUDIO = ASSETS / "demo_speech.wav"
DEMO_POSE = ASSETS / "demo_pose.mp4"
