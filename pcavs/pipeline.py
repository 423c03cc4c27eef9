"""The generation job: media -> aligned crops + mel -> encoders -> style vectors -> generator -> frames -> mp4.

`Pipeline` keeps the networks loaded for repeated calls; `generate()` uses a cached one.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from . import audio as audio_fe
from .allocator import reuse_freed_memory
from .align import loader_view
from .compose import MODES, Composer
from .errors import InputError
from .sources import Identity, Media, aligned_frames, as_list, describe, load_identities
from .video import VideoWriter
from .weights import Networks, find_checkpoints, load_networks

NOISE_MODES = ("fixed", "random")
POSE_LOOPS = ("pingpong", "loop", "hold")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Result:
    """What a job produced. `faces`/`frames` are filled when asked for (or when no video is written)."""

    video: Path | None
    num_frames: int
    fps: int = audio_fe.FPS
    faces: np.ndarray | None = None  # (N, 224, 224, 3) uint8 RGB generated faces
    frames: np.ndarray | None = None  # (N, H, W, 3) uint8 RGB output frames of the chosen mode


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device: {device!r} is not a device; use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device: {device!r} asked for, but no CUDA GPU is available; use device='cpu' or 'auto'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device: {device!r} asked for, but Apple MPS is not available; use device='cpu' or 'auto'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float32
    resolved = DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if resolved not in DTYPES.values():
        raise InputError(f"dtype: {dtype!r} is not supported; use float32, float16 or bfloat16")
    if resolved == torch.float16 and device.type == "cpu":
        raise InputError("dtype: float16 is for GPUs; on the CPU use dtype='bfloat16' or float32")
    if resolved == torch.bfloat16 and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        warnings.warn("dtype: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX), so bfloat16 runs far "
                      "slower than float32 here (100x on one we measured); leave dtype unset", stacklevel=3)
    return resolved


def to_model_input(crops: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Aligned uint8 crops (B, 224, 224, 3) -> the loader's crop, resized back to 224, in [-1, 1], NCHW."""
    resized = np.stack([loader_view(c) for c in crops])
    tensor = torch.from_numpy(resized).to(device).permute(0, 3, 1, 2).to(dtype)
    return tensor / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1] (B, 3, H, W) -> (B, H, W, 3) uint8, truncating like the reference."""
    scaled = ((images.float() + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).cpu().numpy()


def loop_index(frames: np.ndarray, length: int, mode: str) -> np.ndarray:
    """Which source frame drives each output frame: ping-pong (0..n-1, n-1..0, ...), loop, or hold the last."""
    if mode == "loop":
        return frames % length
    if mode == "hold":
        return np.minimum(frames, length - 1)
    phase = frames % (2 * length)
    return np.where(phase < length, phase, 2 * length - 1 - phase)


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def check_inputs(
    face, audio, pose, mouth, out, mode: str, noise: str, pose_loop: str, batch_size: int | None
) -> None:
    """Validate every argument before any model work; errors name the argument and the fix."""
    faces = as_list(face) if face is not None else []
    if not faces:
        raise InputError("face: give a photo path, an RGB array, or a list of them")
    for item in faces:
        if not isinstance(item, np.ndarray) and not Path(item).is_file():
            raise InputError(f"face: {item}: file not found")
    if audio is None and mouth is None:
        raise InputError("audio: give a speech file (wav, mp3, m4a, ...) or a video with sound")
    for name, value in (("audio", audio), ("pose", pose), ("mouth", mouth)):
        if isinstance(value, (str, os.PathLike)) and not Path(value).exists():
            raise InputError(f"{name}: {value}: file not found")
    if mouth is not None and not isinstance(mouth, (str, os.PathLike)):
        raise InputError("mouth: give the path of a video (or a folder of frames) whose mouth motion drives the face")
    if mode not in MODES:
        raise InputError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    if noise not in NOISE_MODES:
        raise InputError(f"noise: {noise!r} is not one of {', '.join(NOISE_MODES)}")
    if pose_loop not in POSE_LOOPS:
        raise InputError(f"pose_loop: {pose_loop!r} is not one of {', '.join(POSE_LOOPS)}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"batch_size: {batch_size!r} must be a positive integer")
    if out is not None:
        folder = Path(out).expanduser().resolve().parent
        if not folder.is_dir():
            raise InputError(f"out: folder {folder} does not exist; create it or choose another path")
        if not os.access(folder, os.W_OK):
            raise InputError(f"out: folder {folder} is not writable; choose another path")
        if Path(out).suffix.lower() not in (".mp4", ".mov", ".m4v"):
            raise InputError(f"out: {out}: the output must be an .mp4 (or .mov) file")


class StageTimer:
    """Cumulative wall-clock seconds per stage of the jobs run so far (read by benchmarks/bench.py)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


class Pipeline:
    """PC-AVS with its networks loaded once; call it for each job."""

    def __init__(self, networks: Networks, device: torch.device, dtype: torch.dtype = torch.float32, compile: bool = False):
        self.device = device
        self.dtype = dtype
        self.timer = StageTimer(device)
        if device.type == "cpu":
            reuse_freed_memory()
        self.networks = networks.to(device)
        for module in self.networks.modules():
            module.to(dtype)
        self.compiled = compile
        if compile:  # up to a minute once, then ~1.1-1.2x faster on a CPU: for long jobs
            self.networks.G = torch.compile(self.networks.G)

    @classmethod
    def from_pretrained(
        cls,
        checkpoints: str | os.PathLike | None = None,
        device: str = "auto",
        dtype: str | torch.dtype | None = None,
        compile: bool = False,
    ) -> "Pipeline":
        """Load the networks from a checkpoint folder (or slim .safetensors file); see `find_checkpoints`.

        compile=True runs the generator through torch.compile (a one-off cost of about a minute).
        """
        resolved = resolve_device(device)
        return cls(load_networks(checkpoints), resolved, resolve_dtype(dtype, resolved), compile)

    def default_batch_size(self) -> int:
        return 32 if self.device.type != "cpu" else 4  # CPU: small batches keep activations in cache

    @torch.inference_mode()
    def __call__(
        self,
        face: Media | Sequence[Media],
        audio: str | os.PathLike | None = None,
        pose: Media | Sequence[Media] | None = None,
        out: str | os.PathLike | None = "result.mp4",
        *,
        mode: str = "full",
        mouth: str | os.PathLike | None = None,
        aligned: bool = False,
        noise: str = "fixed",
        seed: int | None = None,
        pose_loop: str = "pingpong",
        face_index: int | None = None,
        detector: str = "litert",
        batch_size: int | None = None,
        return_frames: bool = False,
        progress: bool = True,
    ) -> Result:
        """Make the talking-face video. See `pcavs.generate` for the arguments."""
        check_inputs(face, audio, pose, mouth, out, mode, noise, pose_loop, batch_size)
        batch_size = batch_size or self.default_batch_size()
        timer = self.timer
        with timer("detect+align photo"):
            identities = load_identities(face, aligned, detector, face_index)
        with timer("audio"):
            samples = audio_fe.normalize_rms(audio_fe.load_audio(audio if audio is not None else mouth))
            count = audio_fe.num_frames(len(samples))
            mel = audio_fe.mel_spectrogram(samples)
            del samples  # hours of audio: only the spectrogram is needed from here on
        with timer("identity"):
            spatial, pooled, reference_pose = self._identity(identities)
        with timer("pose"):
            pose_codes, pose_crops = self._pose_codes(pose, aligned, detector, count, batch_size, keep=mode == "grid")
        with timer("mouth video"):
            mouth_codes = self._video_mouth_codes(mouth, aligned, detector, count, batch_size) if mouth is not None else None
        composer = Composer(mode, identities[0])
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        keep_faces = return_frames or out is None
        faces, frames = [], []

        from tqdm.auto import tqdm

        writer = VideoWriter(out, *composer.size(), audio=audio if audio is not None else mouth) if out else None
        with tqdm(total=count, unit="frame", disable=not progress, desc="pcavs") as bar, (writer or _Null()):
            for start in range(0, count, batch_size):
                indices = np.arange(start, min(count, start + batch_size))
                with timer("A_sync"):
                    if mouth_codes is None:
                        windows = torch.from_numpy(audio_fe.frame_windows(mel, indices)).to(self.device, self.dtype)
                        mouth_code = self.networks.E.mouth_code_from_audio(self.networks.A_sync(windows))
                    else:
                        mouth_code = mouth_codes[loop_index(indices, len(mouth_codes), "hold")]
                if pose_codes is None:
                    pose_index, pose_code = None, reference_pose.expand(len(indices), -1)
                else:
                    pose_index = loop_index(indices, len(pose_codes), pose_loop)
                    pose_code = pose_codes[pose_index]
                style = torch.cat([pooled.expand(len(indices), -1), mouth_code, pose_code], dim=1)
                noise_maps = None if noise == "fixed" else self.networks.G.random_noise(len(indices), generator)
                if noise_maps is not None:
                    noise_maps = [n.to(self.dtype) for n in noise_maps]
                with timer("G"):
                    batch_faces = self._generate(spatial, *self._padded(style, noise_maps, batch_size))[: len(indices)]
                for k, generated in enumerate(batch_faces):
                    pose_crop = pose_crops[pose_index[k]] if pose_crops is not None and pose_index is not None else None
                    with timer("compose"):
                        frame = composer(generated, pose_crop)
                    if writer is not None:
                        with timer("encode"):
                            writer.write(frame)
                    if keep_faces:
                        faces.append(generated)
                        if return_frames:
                            frames.append(frame)
                bar.update(len(indices))
        return Result(
            video=Path(out) if out else None,
            num_frames=count,
            faces=np.stack(faces) if keep_faces else None,
            frames=np.stack(frames) if return_frames else None,
        )

    def _padded(self, style: torch.Tensor, noise: list[torch.Tensor] | None, size: int):
        """A compiled generator keeps one batch shape: the last, short batch is padded by repeating its last frame."""
        missing = size - len(style)
        if not self.compiled or missing <= 0:
            return style, noise
        pad = lambda t: torch.cat([t, t[-1:].expand(missing, *t.shape[1:])])  # noqa: E731
        return pad(style), None if noise is None else [pad(n) for n in noise]

    def _generate(self, spatial: torch.Tensor, style: torch.Tensor, noise: list[torch.Tensor] | None) -> np.ndarray:
        """G on a batch; out of GPU memory, the batch is split in halves (down to one frame) before giving up."""
        try:
            return to_uint8(self.networks.G(spatial, style, noise))
        except torch.OutOfMemoryError:
            if len(style) == 1:
                raise InputError(
                    f"{self.device}: out of memory even for one frame; close other GPU work, use dtype='float16', "
                    "or device='cpu'"
                ) from None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(style) // 2
            parts = [(style[:half], None if noise is None else [n[:half] for n in noise]),
                     (style[half:], None if noise is None else [n[half:] for n in noise])]
            return np.concatenate([self._generate(spatial, s, n) for s, n in parts])

    def _encode(self, crops: np.ndarray) -> torch.Tensor:
        return to_model_input(crops, self.device, self.dtype)

    def _identity(self, identities: list[Identity]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """V and E on the reference photos, averaged: spatial map, pooled identity, and their head pose code."""
        crops = np.stack([identity.face.crop for identity in identities])
        images = self._encode(crops)
        pooled, spatial = self.networks.V(images)
        feature = self.networks.E(images).mean(0, keepdim=True)
        return spatial.mean(0, keepdim=True), pooled.mean(0, keepdim=True), self.networks.E.headpose_code(feature)

    def _pose_codes(
        self, pose, aligned: bool, detector: str, limit: int, batch_size: int, keep: bool
    ) -> tuple[torch.Tensor | None, np.ndarray | None]:
        """Head-pose codes, once per distinct pose frame (only the first `limit` frames can be shown)."""
        if pose is None:
            return None, None
        codes, kept = [], []
        for batch in batched(aligned_frames(pose, aligned, detector, limit), batch_size):
            crops = np.stack(batch)
            codes.append(self.networks.E.headpose_code(self.networks.E(self._encode(crops))))
            if keep:
                kept.append(crops)
        if not codes:
            raise InputError(f"pose: {describe(pose)}: holds no frames; give a video, a folder of frames or an image")
        return torch.cat(codes), (np.concatenate(kept) if keep else None)

    def _video_mouth_codes(self, mouth, aligned: bool, detector: str, limit: int, batch_size: int) -> torch.Tensor:
        """Mouth codes from a video's frames (experimental: the model was trained mainly on audio)."""
        codes = [
            self.networks.E.mouth_code_from_video(self.networks.E(self._encode(np.stack(batch))))
            for batch in batched(aligned_frames(mouth, aligned, detector, limit), batch_size)
        ]
        if not codes:
            raise InputError(f"mouth: {describe(mouth)}: holds no frames")
        return torch.cat(codes)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


_CACHE: dict[tuple, Pipeline] = {}


def generate(
    face: Media | Sequence[Media],
    audio: str | os.PathLike | None = None,
    pose: Media | Sequence[Media] | None = None,
    out: str | os.PathLike | None = "result.mp4",
    *,
    checkpoints: str | os.PathLike | None = None,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
    compile: bool = False,
    **options,
) -> Result:
    """Make a talking-face video from a photo, a voice and an optional head-motion source.

    face: photo path, RGB array, or a list of photos of one person (identities averaged).
    audio: any speech file ffmpeg decodes (or a video with sound).
    pose: head-motion video, folder of frames, list of frames, one image (fixed pose), or None
        (the photo's own pose).
    out: the mp4 to write, or None to only return `result.faces`.
    checkpoints, device, dtype, compile: as for `Pipeline.from_pretrained`; the loaded
    pipeline is kept for the next call with the same ones.
    Options: mode ("full" | "crop" | "grid"), mouth (video driving the mouth; experimental),
    aligned (inputs already are 224x224 PC-AVS crops), noise ("fixed" | "random"), seed,
    pose_loop ("pingpong" | "loop" | "hold"), face_index, detector, batch_size,
    return_frames, progress.
    """
    check_inputs(
        face, audio, pose, options.get("mouth"), out, options.get("mode", "full"), options.get("noise", "fixed"),
        options.get("pose_loop", "pingpong"), options.get("batch_size"),
    )
    resolved = resolve_device(device)
    key = (str(find_checkpoints(checkpoints).resolve()), str(resolved), str(resolve_dtype(dtype, resolved)), compile)
    if key not in _CACHE:
        pipeline = Pipeline.from_pretrained(checkpoints, device=str(resolved), dtype=dtype, compile=compile)
        _CACHE.clear()  # one set of networks in memory at a time
        _CACHE[key] = pipeline
    return _CACHE[key](face, audio, pose, out, **options)
