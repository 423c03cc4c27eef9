"""The generation job: media -> aligned crops + mel -> encoders -> style vectors -> generator -> frames -> mp4.

`Pipeline` keeps the networks loaded for repeated calls; `generate()` uses a cached one.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from ..core.devices import ShrinkingBatches, resolve_device, resolve_dtype, reuse_freed_memory
from ..core.errors import InputError
from ..core.files import folder_writable
from ..core.options import Options, job_options
from ..faces.align import loader_view
from ..faces.sources import Identity, Media, aligned_frames, as_list, describe, load_identities
from ..media.video import FPS, VideoWriter
from ..models.mel import frame_windows, speech_features
from ..models.pixels import to_tensor, to_uint8
from ..models.weights import Networks, find_checkpoints, load_networks
from ..restore.restorer import Restorer
from ..restore.weights import ensure_checkpoint, load_gfpgan
from .compose import Composer
from .enhance import EnhanceStage

T = TypeVar("T")


@dataclass
class Result:
    """What a job produced. `faces`/`frames` are filled when asked for (or when no video is written)."""

    video: Path | None
    num_frames: int
    fps: int = FPS
    faces: np.ndarray | None = None  # (N, 224, 224, 3) uint8 RGB generated faces
    frames: np.ndarray | None = None  # (N, H, W, 3) uint8 RGB output frames of the chosen mode


def to_model_input(crops: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Aligned uint8 crops (B, 224, 224, 3) -> the loader's view of them, in [-1, 1], NCHW."""
    return to_tensor(np.stack([loader_view(c) for c in crops]), device, dtype)


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


def check_inputs(face, audio, pose, out, options: Options) -> None:
    """Validate the media and the output before any model work; errors name the argument and the fix."""
    faces = as_list(face) if face is not None else []
    if not faces:
        raise InputError("face: give a photo path, an RGB array, or a list of them")
    for item in faces:
        if not isinstance(item, np.ndarray) and not Path(item).is_file():
            raise InputError(f"face: {item}: file not found")
    if audio is None and options.mouth is None:
        raise InputError("audio: give a speech file (wav, mp3, m4a, ...) or a video with sound")
    for name, value in (("audio", audio), ("pose", pose), ("mouth", options.mouth)):
        if isinstance(value, (str, os.PathLike)) and not Path(value).exists():
            raise InputError(f"{name}: {value}: file not found")
    if out is not None:
        folder = Path(out).expanduser().resolve().parent
        if not folder.is_dir():
            what = " (a file has that name)" if folder.exists() else ""
            raise InputError(f"out: folder {folder} does not exist{what}; create it or choose another path")
        if not folder_writable(folder):
            raise InputError(f"out: folder {folder} is not writable; choose another path")
        if Path(out).suffix.lower() not in (".mp4", ".mov", ".m4v"):
            raise InputError(f"out: {out}: the output must be an .mp4 (or .mov) file")


class StageTimer:
    """Cumulative wall-clock seconds per stage of the jobs run so far (`Pipeline.profile()`; read by benchmarks)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, work: Callable[..., T], *args, **kwargs) -> T:
        start = time.perf_counter()
        try:
            return work(*args, **kwargs)
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


class Pipeline:
    """PC-AVS with its networks loaded once; call it for each job."""

    def __init__(self, networks: Networks, device: torch.device, dtype: torch.dtype = torch.float32, compile: bool = False):
        self.device = device
        self.dtype = dtype
        self.timer: StageTimer | None = None
        if device.type == "cpu":
            reuse_freed_memory()
        self.networks = networks.to(device)
        for module in self.networks.modules():
            module.to(dtype)
        self.compiled = compile
        self._restorer: tuple[Path, Restorer] | None = None  # GFPGAN, loaded by the first enhance= job
        self._generator_batches = ShrinkingBatches(device, "the generator", "frame")
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

    def profile(self) -> StageTimer:
        """Time every stage of the following jobs (cumulative seconds in the returned timer's `seconds`)."""
        self.timer = StageTimer(self.device)
        return self.timer

    def _stage(self, name: str, work: Callable[..., T], *args, **kwargs) -> T:
        return work(*args, **kwargs) if self.timer is None else self.timer.run(name, work, *args, **kwargs)

    def __call__(
        self,
        face: Media | Sequence[Media],
        audio: str | os.PathLike | None = None,
        pose: Media | Sequence[Media] | None = None,
        out: str | os.PathLike | None = "result.mp4",
        **options,
    ) -> Result:
        """Make the talking-face video. See `pcavs.generate` for the arguments and `pcavs.Options`."""
        return self.run(face, audio, pose, out, job_options(**options))

    @torch.inference_mode()
    def run(self, face, audio, pose, out, options: Options) -> Result:
        """One job with validated `options`: media -> codes -> generator batches -> frames -> mp4."""
        check_inputs(face, audio, pose, out, options)
        restorer = self._stage("load restorer", self._load_restorer, options) if options.enhance else None
        sound = audio if audio is not None else options.mouth
        batch_size = options.batch_size or self.default_batch_size()
        identities = self._stage("detect+align photo", load_identities, face, options.aligned, options.detector,
                                 options.face_index)
        mel, count = self._stage("audio", speech_features, sound)
        spatial, pooled, reference_pose = self._stage("identity", self._identity, identities)
        pose_codes, pose_crops = self._stage("pose", self._pose_codes, pose, options, count, batch_size)
        mouth_codes = self._stage("mouth video", self._video_mouth_codes, options, count, batch_size)
        enhancer = EnhanceStage(restorer, identities[0], options) if restorer is not None else None
        composer = enhancer or Composer(options.mode, identities[0])
        output = Output(out, composer, sound, keep_faces=options.return_frames or options.return_faces or out is None,
                        keep_frames=options.return_frames)
        generator = torch.Generator().manual_seed(options.seed) if options.seed is not None else None

        from tqdm.auto import tqdm

        with tqdm(total=count, unit="frame", disable=not options.progress, desc="pcavs") as bar, output:
            for start in range(0, count, batch_size):
                indices = np.arange(start, min(count, start + batch_size))
                mouth = self._stage("A_sync", self._mouth_codes, mel, indices, mouth_codes)
                pose_index, pose_code = self._batch_pose(indices, pose_codes, reference_pose, options.pose_loop)
                style = torch.cat([pooled.expand(len(indices), -1), mouth, pose_code], dim=1)
                noise = self._noise(len(indices), options.noise, generator)
                faces = self._stage("G", self._generate, spatial, *self._padded(style, noise, batch_size))
                pose_frames = [pose_crops[i] for i in pose_index] if pose_crops is not None else None
                faces = faces[: len(indices)]
                frames = self._stage("enhance", enhancer, faces) if enhancer is not None else None
                self._stage("compose+encode", output.add, faces, pose_frames, frames)
                bar.update(len(indices))
        return output.result(count)

    def _load_restorer(self, options: Options) -> Restorer:
        """GFPGAN from `enhance_checkpoint` (else $PCAVS_GFPGAN, else the user cache, downloaded there when
        missing), kept for the next job that uses the same file."""
        path = ensure_checkpoint(options.enhance_checkpoint, progress=options.progress).resolve()
        if self._restorer is None or self._restorer[0] != path:
            self._restorer = None  # one restorer in memory at a time
            self._restorer = (path, Restorer(load_gfpgan(path), self.device, self.dtype))
        return self._restorer[1]

    def _mouth_codes(self, mel: np.ndarray, indices: np.ndarray, video_codes: torch.Tensor | None) -> torch.Tensor:
        """Mouth codes of a batch of frames: A_sync on their mel windows, or the mouth video's codes."""
        if video_codes is not None:
            return video_codes[loop_index(indices, len(video_codes), "hold")]
        windows = torch.from_numpy(frame_windows(mel, indices)).to(self.device, self.dtype)
        return self.networks.E.mouth_code_from_audio(self.networks.A_sync(windows))

    @staticmethod
    def _batch_pose(indices: np.ndarray, codes: torch.Tensor | None, reference: torch.Tensor, loop: str):
        """Which pose frame drives each frame of the batch (None: the photo's own pose) and its codes."""
        if codes is None:
            return None, reference.expand(len(indices), -1)
        index = loop_index(indices, len(codes), loop)
        return index, codes[index]

    def _noise(self, count: int, mode: str, generator: torch.Generator | None) -> list[torch.Tensor] | None:
        if mode == "fixed":
            return None
        return [n.to(self.dtype) for n in self.networks.G.random_noise(count, generator)]

    def _padded(self, style: torch.Tensor, noise: list[torch.Tensor] | None, size: int):
        """A compiled generator keeps one batch shape: the last, short batch is padded by repeating its last frame."""
        missing = size - len(style)
        if not self.compiled or missing <= 0:
            return style, noise
        pad = lambda t: torch.cat([t, t[-1:].expand(missing, *t.shape[1:])])  # noqa: E731
        return pad(style), None if noise is None else [pad(n) for n in noise]

    def _generate(self, spatial: torch.Tensor, style: torch.Tensor, noise: list[torch.Tensor] | None) -> np.ndarray:
        """G on a batch; out of device memory, the batch is split (see ShrinkingBatches)."""

        def run(start: int, stop: int) -> np.ndarray:
            maps = None if noise is None else [n[start:stop] for n in noise]
            return to_uint8(self.networks.G(spatial, style[start:stop], maps))

        return np.concatenate(self._generator_batches(run, len(style)))

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
        self, pose, options: Options, limit: int, batch_size: int
    ) -> tuple[torch.Tensor | None, np.ndarray | None]:
        """Head-pose codes, once per distinct pose frame (only the first `limit` frames can be shown);
        the aligned pose crops too, for the grid."""
        if pose is None:
            return None, None
        codes, kept = [], []
        for batch in batched(aligned_frames(pose, options.aligned, options.detector, limit), batch_size):
            crops = np.stack(batch)
            codes.append(self.networks.E.headpose_code(self.networks.E(self._encode(crops))))
            if options.mode == "grid":
                kept.append(crops)
        if not codes:
            raise InputError(f"pose: {describe(pose)}: holds no frames; give a video, a folder of frames or an image")
        return torch.cat(codes), (np.concatenate(kept) if kept else None)

    def _video_mouth_codes(self, options: Options, limit: int, batch_size: int) -> torch.Tensor | None:
        """Mouth codes from a video's frames (experimental: the model was trained mainly on audio)."""
        if options.mouth is None:
            return None
        codes = [
            self.networks.E.mouth_code_from_video(self.networks.E(self._encode(np.stack(batch))))
            for batch in batched(aligned_frames(options.mouth, options.aligned, options.detector, limit), batch_size)
        ]
        if not codes:
            raise InputError(f"mouth: {describe(options.mouth)}: holds no frames")
        return torch.cat(codes)


class Output:
    """Where the frames of one job go: the composed frames into the mp4, the faces/frames into the result."""

    def __init__(self, out, composer: Composer | EnhanceStage, sound, keep_faces: bool, keep_frames: bool):
        self.out = Path(out) if out else None
        self.composer = composer
        self.writer = VideoWriter(out, *composer.size(), audio=sound) if out else None
        self.faces: list[np.ndarray] | None = [] if keep_faces else None
        self.frames: list[np.ndarray] | None = [] if keep_frames else None

    def __enter__(self) -> "Output":
        if self.writer is not None:
            self.writer.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.__exit__(*exc)

    def add(self, faces: np.ndarray, pose_crops: list[np.ndarray] | None, frames: list[np.ndarray] | None = None) -> None:
        """Write a batch: each face composed into its frame, or the given `frames` (the enhance step's)."""
        for k, face in enumerate(faces):
            if frames is not None:
                frame = frames[k]
            else:
                frame = self.composer(face, pose_crops[k] if pose_crops is not None else None)
            if self.writer is not None:
                self.writer.write(frame)
            if self.faces is not None:
                self.faces.append(face)
            if self.frames is not None:
                self.frames.append(frame)

    def result(self, count: int) -> Result:
        return Result(
            video=self.out,
            num_frames=count,
            faces=np.stack(self.faces) if self.faces is not None else None,
            frames=np.stack(self.frames) if self.frames is not None else None,
        )


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
    Options (see `pcavs.Options`): mode ("full" | "crop" | "grid"), mouth (video
    driving the mouth; experimental), aligned (inputs already are 224x224 PC-AVS crops),
    noise ("fixed" | "random"), seed, pose_loop ("pingpong" | "loop" | "hold"), face_index,
    detector, batch_size, enhance ("gfpgan": restore every face with GFPGAN v1.4),
    enhance_weight (0...1), enhance_smooth (0...1, against flicker), enhance_checkpoint,
    return_frames, return_faces, progress.
    """
    job = job_options(**options)
    check_inputs(face, audio, pose, out, job)
    if job.enhance:  # missing GFPGAN weights fail (or download) before any network loads
        ensure_checkpoint(job.enhance_checkpoint, progress=job.progress)
    resolved = resolve_device(device)
    key = (str(find_checkpoints(checkpoints).resolve()), str(resolved), str(resolve_dtype(dtype, resolved)), compile)
    if key not in _CACHE:
        pipeline = Pipeline.from_pretrained(checkpoints, device=str(resolved), dtype=dtype, compile=compile)
        _CACHE.clear()  # one set of networks in memory at a time
        _CACHE[key] = pipeline
    return _CACHE[key].run(face, audio, pose, out, job)
