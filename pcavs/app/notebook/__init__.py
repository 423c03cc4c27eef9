"""Notebook helpers: the GPU check, the media a job uses (uploaded, recorded or the demo), option
dropdowns built from `pcavs.Options`, the video watched as it is made, a player that keeps the notebook small,
and a download.

- `runtime`: Colab or Jupyter, GPU or CPU (`in_colab`, `gpu_status`).
- `media`: picking, uploading, recording and checking the face, voice and pose (`MediaPicker`); the browser
  side of the recordings is `record_voice.js` and `take_photo.js`, shipped beside it.
- `forms`: the option dropdowns (`OptionsForm`).
- `player`: frames and videos in the notebook (`watch`, `show_video`, `download`) and, for Colab, the
  kernel's file server that plays a large video from disk.

Uploads: in Colab, `google.colab.files.upload()` (one picker per input; it copes with large files,
which Colab's FileUpload widget does not); in Jupyter, one `ipywidgets.FileUpload` per input
(ipywidgets 7 and 8). Every upload or recording is copied into one temporary folder (a new
upload for an input replaces that input's copy; the folder is removed when Python exits) and
read with the readers pcavs uses for any file (`read_image`, `load_speech`, the video decoder):
an empty or unreadable one raises InputError naming it. The demo media stand in only for an
input that the user leaves empty, and `MediaPicker.files()` prints which file each input uses.

Recording (microphone, webcam) needs Colab: its `output.eval_js` runs the browser side and hands
what the browser recorded back to Python. Plain Jupyter has no such channel that works in both
Notebook and JupyterLab without installing a widget extension, so there "record" is refused with
a message saying so: record with any app and upload the file.
"""
from __future__ import annotations

from .forms import SHOWN_OPTIONS, OptionsForm
from .media import (
    RECORD_VOICE_JS, TAKE_PHOTO_JS, MediaPicker, Medium, check_file, colab_upload, demo, from_upload, keep,
    parse_data_url, record, suffix_for, upload_folder, uploaded,
)
from .player import INLINE_LIMIT, download, picture, show_video, watch
from .runtime import gpu_status, in_colab

__all__ = [
    "INLINE_LIMIT", "RECORD_VOICE_JS", "SHOWN_OPTIONS", "TAKE_PHOTO_JS", "MediaPicker", "Medium", "OptionsForm",
    "check_file", "colab_upload", "demo", "download", "from_upload", "gpu_status", "in_colab", "keep",
    "parse_data_url", "picture", "record", "show_video", "suffix_for", "upload_folder", "uploaded", "watch",
]
