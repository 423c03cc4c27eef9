"""The generation job: media -> aligned crops + mel -> encoders -> style vectors -> generator -> frames -> mp4.

`Pipeline` keeps the networks loaded for repeated calls; `generate()` uses a cached one.
"""
from __future__ import annotations

import functools
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from ..core.devices import ShrinkingBatches, resolve_device, resolve_dtype, reuse_freed_memory
from ..core.errors import InputError
from ..core.facts import FPS, SAMPLE_RATE
from ..core.files import folder_writable
from ..core.options import Options, job_options
from ..faces.align import loader_view
from ..faces.sources import Identity, Media, aligned_frames, as_list, describe, load_identities
from ..media.video import VideoWriter
from ..models.mel import frame_windows
from ..models.pixels import to_tensor, to_uint8
from ..models.weights import Networks, find_checkpoints, load_networks
from ..restore.restorer import Restorer
from ..restore.weights import ensure_checkpoint, load_gfpgan
from . import stream as streaming
from .avatar import Avatar, PoseCodes, loop_index
from .compose import Composer, Finisher
from .enhance import EnhanceStage
from .stream import LOOKAHEAD, AudioFeed, Batch, FrameStream, Progress, check_audio

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


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def check_inputs(face, audio, pose, out, options: Options, need_audio: bool = True) -> None:
    """Validate the media and the output before any model work; errors name the argument and the fix."""
    faces = [] if face is None else [] if isinstance(face, Avatar) else as_list(face)
    if not faces and not isinstance(face, Avatar):
        raise InputError("face: give a photo path, an RGB array, a list of them, or an avatar (Pipeline.prepare)")
    for item in faces:
        if not isinstance(item, np.ndarray) and not Path(item).is_file():
            raise InputError(f"face: {item}: file not found")
    if need_audio and audio is None and options.mouth is None:
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

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Add the seconds of the `with` block (the device's queued work included) to `stage`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def timed(stage: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A `Pipeline` method whose seconds count under `stage` in `Pipeline.profile()`."""

    def wrap(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def run(self: "Pipeline", *args, **kwargs) -> T:
            with self._timed(stage):
                return method(self, *args, **kwargs)

        return run

    return wrap


@dataclass(frozen=True)
class Splits:
    """Each network's out-of-memory splitting for one job (see `ShrinkingBatches`)."""

    G: ShrinkingBatches
    V: ShrinkingBatches
    E: ShrinkingBatches
    A_sync: ShrinkingBatches


@dataclass
class Job:
    """One job's state: the avatar (codes of the face and the pose), the options, and how frames are finished."""

    avatar: Avatar
    options: Options
    batch_size: int
    mouth_codes: torch.Tensor | None  # from a mouth video (experimental); None: from the audio
    splits: Splits
    finisher: Finisher  # generated faces -> output frames
    generator: torch.Generator | None  # noise="random": drawn frame by frame, in frame order


class Pipeline:
    """PC-AVS with its networks loaded once; call it for each job, or `stream` frames as the voice arrives."""

    lookahead = LOOKAHEAD  # s of audio after a frame's own 40 ms that its mel window reads

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

    def default_batch_size(self, realtime: bool = False) -> int:
        """32 on a GPU; on a CPU 4 (small batches keep activations in cache), 1 in real time (the least latency)."""
        if self.device.type != "cpu":
            return 32
        return 1 if realtime else 4

    def profile(self) -> StageTimer:
        """Time every stage of the following jobs (cumulative seconds in the returned timer's `seconds`)."""
        self.timer = StageTimer(self.device)
        return self.timer

    def _timed(self, stage: str) -> ContextManager[None]:
        """The `with` block's seconds counted under `stage` while a profile is on."""
        return nullcontext() if self.timer is None else self.timer(stage)

    def __call__(
        self,
        face: Media | Sequence[Media] | Avatar,
        audio: str | os.PathLike | None = None,
        pose: Media | Sequence[Media] | None = None,
        out: str | os.PathLike | None = "result.mp4",
        **options,
    ) -> Result:
        """Make the talking-face video. See `pcavs.generate` for the arguments and `pcavs.Options`;
        `face` may also be an avatar from `prepare`."""
        return self.run(face, audio, pose, out, job_options(**options))

    @torch.inference_mode()
    def prepare(self, face: Media | Sequence[Media], pose: Media | Sequence[Media] | None = None, **options) -> Avatar:
        """Detect and align the face, and encode its identity and every pose frame's head pose, once: the avatar
        that `run`, `__call__` and `stream` take in place of `face`, so one face serves many voices.

        Options that matter here: aligned, detector, face_index, and mode="grid" to keep the pose frames
        that grid mode shows.
        """
        job = job_options(**options)
        check_inputs(face, None, pose, None, job, need_audio=False)
        splits = self._splits()
        motion = self._pose(pose, job, None, splits)
        if motion is not None:
            with self._timed("pose"):
                motion.read_all()
        return replace(self._avatar(face, job, splits), pose=motion)

    @torch.inference_mode()
    def run(self, face, audio, pose, out, options: Options) -> Result:
        """One job with validated `options`: media -> codes -> generator batches -> frames -> mp4."""
        check_inputs(face, audio, pose, out, options)
        if audio is not None and not isinstance(audio, (str, os.PathLike)):
            raise InputError("audio: give a speech file; for chunks of audio as they arrive, use Pipeline.stream")
        sound = audio if audio is not None else options.mouth
        feed = AudioFeed(sound, options.loudness)
        with self._timed("audio"):
            feed.open()
        count = feed.ready()
        job = self._job(face, pose, options, count, realtime=False, progress=Progress())
        output = Output(out, job.finisher.size(), sound, keep_faces=options.return_frames or options.return_faces or out is None,
                        keep_frames=options.return_frames)

        from tqdm.auto import tqdm

        with tqdm(total=count, unit="frame", disable=not options.progress, desc="pcavs") as bar, output:
            for indices, frames, faces in self._frames(job, feed):
                with self._timed("encode"):
                    output.add(faces, frames)
                bar.update(len(indices))
        return output.result(count)

    def stream(
        self,
        face: Media | Sequence[Media] | Avatar,
        audio: str | os.PathLike | Iterable[np.ndarray] | None,
        pose: Media | Sequence[Media] | None = None,
        *,
        sample_rate: int = SAMPLE_RATE,
        realtime: bool = False,
        **options,
    ) -> FrameStream:
        """Frames as the voice arrives: an iterator of `pcavs.Frame(index, time, image)`.

        `audio` is a speech file, or an iterable of 1-D float32 mono PCM chunks at `sample_rate` (any
        size; the stream ends when the iterable does). Frame f comes as soon as the audio up to
        (f + 1) * 0.04 s + `Pipeline.lookahead` is in, and equals `run`'s frame f (bit-identical on the
        CPU at batch_size=1; chunks use loudness="running", so compare with `run(..., loudness="running")`).
        `realtime=True`: when making frames is slower than the audio clock, frames are dropped rather than
        queued (the stream's `dropped` and `latency` tell); each frame given is still the offline frame
        of its index. The options are `run`'s (see `pcavs.Options`; return_faces keeps `stream.faces`,
        and return_frames and progress do not apply): see `FrameStream.segments` for a video that plays
        while it is made.
        Nothing runs until the first frame is asked for.
        """
        job = job_options(**options)
        check_inputs(face, audio, pose, None, job)
        if realtime and job.enhance and job.enhance_smooth > 0:
            raise InputError("enhance_smooth: smoothing needs every frame, and realtime=True drops frames; "
                             "use enhance_smooth=0 or realtime=False")
        check_audio(audio, job.loudness, sample_rate)
        feed = AudioFeed(audio if audio is not None else job.mouth, job.loudness, sample_rate, realtime)
        progress = Progress()
        return FrameStream(feed, self._streamed(face, pose, job, realtime, feed, progress), progress,
                           keep_faces=job.return_faces)

    @torch.inference_mode()
    def _streamed(self, face, pose, options: Options, realtime: bool, feed: AudioFeed,
                  progress: Progress) -> Iterator[Batch]:
        """The batches of a stream, from its first `next` on: the voice (a file's, decoded), the job, the frames."""
        feed.open()
        job = self._job(face, pose, options, feed.ready() if feed.finished else None, realtime, progress)
        progress.stage = "making frames"
        yield from self._frames(job, feed, progress)

    @torch.inference_mode()
    def _frames(self, job: Job, feed: AudioFeed, stream: Progress | None = None) -> Iterator[Batch]:
        """The frame loop of every job, `run`'s and `stream`'s: (frame indices, output frames, generated faces)
        for each batch, as soon as the feed has the audio its frames need. A stream's (`stream`: its progress,
        where each batch's work is noted) makes its first frame in a batch of its own, to show it sooner."""
        done, slow, quiet = 0, False, False
        still = job.avatar.pose is None and job.options.noise == "fixed" and job.mouth_codes is None
        while (span := feed.next_frames(done, job.batch_size if done or stream is None else 1)) is not None:
            first, stop = span
            if slow and still and quiet and feed.quiet(first, stop) and feed.wait():
                continue  # slower than real time, and these frames would repeat the quiet ones before: wait for a sound
            started, quiet = streaming.clock(), still and feed.quiet(first, stop)
            self._skip(job, first - done)
            indices = np.arange(first, stop)
            mouth = self._mouth_codes(feed.mel.mel, indices, job.mouth_codes, job.splits)
            pose_code, poses = self._batch_pose(indices, job)
            style = torch.cat([job.avatar.pooled.expand(len(indices), -1), mouth, pose_code], dim=1)
            noise = self._noise(len(indices), job)
            faces = self._generate(job.avatar.spatial, *self._padded(style, noise, job.batch_size), job.splits)
            faces = faces[: len(indices)]
            with self._timed(job.finisher.stage):
                frames = job.finisher.finish(faces, poses)
            work = streaming.clock() - started
            slow = work > len(indices) / FPS
            if stream is not None:
                stream.work = work
            yield indices, frames, faces
            done = stop

    def _job(self, face, pose, options: Options, limit: int | None, realtime: bool, progress: Progress) -> Job:
        """Everything a job needs before its first frame (the pose source's first batch of frames, not the rest);
        `limit`: how many frames it will have (None: unknown); `progress`: its stage, in words."""
        restorer = self._load_restorer(options) if options.enhance else None
        splits = self._splits()
        if isinstance(face, Avatar):
            avatar = face
            if avatar.spatial.device != self.device or avatar.spatial.dtype != self.dtype:
                raise InputError(f"face: the avatar was prepared on {avatar.spatial.device} in {avatar.spatial.dtype}; "
                                 f"prepare it with this pipeline ({self.device}, {self.dtype})")
        else:
            progress.stage = "finding the face"
            avatar = self._avatar(face, options, splits)
        progress.stage = "reading the head motion"
        if pose is not None:
            avatar = replace(avatar, pose=self._pose(pose, options, limit, splits))
            with self._timed("pose"):
                avatar.pose.read()  # the first batch's frames; the rest as the frames reach them
        if options.mode == "grid" and avatar.pose is not None and avatar.pose.crops is None:
            raise InputError("mode: 'grid' shows the pose frames, which this avatar did not keep; "
                             "prepare it with mode='grid'")
        batch_size = options.batch_size or self.default_batch_size(realtime)
        enhancer = EnhanceStage(restorer, avatar.identities[0], options) if restorer is not None else None
        return Job(
            avatar=avatar,
            options=options,
            batch_size=batch_size,
            mouth_codes=self._video_mouth_codes(options, limit, splits),
            splits=splits,
            finisher=enhancer or Composer(options.mode, avatar.identities[0]),
            generator=torch.Generator().manual_seed(options.seed) if options.seed is not None else None,
        )

    def _splits(self) -> Splits:
        """One ShrinkingBatches per network, kept for one job: out of device memory a network's batch is split,
        and the size that fit is used until the job ends."""
        return Splits(
            G=ShrinkingBatches(self.device, "the generator", "frame"),
            V=ShrinkingBatches(self.device, "the identity encoder V", "photo"),
            E=ShrinkingBatches(self.device, "the pose encoder E", "frame"),
            A_sync=ShrinkingBatches(self.device, "the audio encoder A_sync", "frame"),
        )

    def _avatar(self, face, options: Options, splits: Splits) -> Avatar:
        """The photos found, aligned and encoded, with their own head pose (no pose source)."""
        with self._timed("detect+align photo"):
            identities = load_identities(face, options.aligned, options.detector, options.face_index)
        spatial, pooled, reference_pose = self._identity(identities, splits)
        return Avatar(identities, spatial, pooled, reference_pose, None, options)

    @timed("load restorer")
    def _load_restorer(self, options: Options) -> Restorer:
        """GFPGAN from `enhance_checkpoint` (else $PCAVS_GFPGAN, else the user cache, downloaded there when
        missing), kept for the next job that uses the same file."""
        path = ensure_checkpoint(options.enhance_checkpoint, progress=options.progress).resolve()
        if self._restorer is None or self._restorer[0] != path:
            self._restorer = None  # one restorer in memory at a time
            self._restorer = (path, Restorer(load_gfpgan(path), self.device, self.dtype))
        return self._restorer[1]

    @timed("A_sync")
    def _mouth_codes(self, mel: np.ndarray, indices: np.ndarray, video_codes: torch.Tensor | None,
                     splits: Splits) -> torch.Tensor:
        """Mouth codes of a batch of frames: A_sync on their mel windows, or the mouth video's codes."""
        if video_codes is not None:
            return video_codes[loop_index(indices, len(video_codes), "hold")]
        windows = torch.from_numpy(frame_windows(mel, indices)).to(self.device, self.dtype)

        def encode(start: int, stop: int) -> torch.Tensor:
            return self.networks.E.mouth_code_from_audio(self.networks.A_sync(windows[start:stop]))

        return torch.cat(splits.A_sync(encode, len(windows)))

    @timed("pose")
    def _batch_pose(self, indices: np.ndarray, job: Job) -> tuple[torch.Tensor, np.ndarray | None]:
        """The head-pose code of each frame of the batch (the photo's own without a pose source), and the pose
        frame that gives it when the grid shows them; later pose frames are read as the batches need them."""
        pose = job.avatar.pose
        if pose is None:
            return job.avatar.reference_pose.expand(len(indices), -1), None
        index = pose.pick(indices, job.options.pose_loop)
        return pose.codes[index], None if pose.crops is None else pose.crops[index]

    def _noise(self, count: int, job: Job) -> list[torch.Tensor] | None:
        """noise="random": fresh maps drawn frame by frame, so a frame's noise never depends on the batches."""
        if job.options.noise == "fixed":
            return None
        drawn = [self.networks.G.random_noise(1, job.generator) for _ in range(count)]
        return [torch.cat(layer).to(self.dtype) for layer in zip(*drawn)]

    def _skip(self, job: Job, count: int) -> None:
        """Frames real-time mode drops: their random noise is drawn all the same, so later frames keep theirs."""
        if count:
            if job.options.noise == "random":
                self._noise(count, job)
            job.finisher.skip(count)

    def _padded(self, style: torch.Tensor, noise: list[torch.Tensor] | None, size: int):
        """A compiled generator keeps one batch shape: the last, short batch is padded by repeating its last frame."""
        missing = size - len(style)
        if not self.compiled or missing <= 0:
            return style, noise
        pad = lambda t: torch.cat([t, t[-1:].expand(missing, *t.shape[1:])])  # noqa: E731
        return pad(style), None if noise is None else [pad(n) for n in noise]

    @timed("G")
    def _generate(self, spatial: torch.Tensor, style: torch.Tensor, noise: list[torch.Tensor] | None,
                  splits: Splits) -> np.ndarray:
        """G on a batch; out of device memory, the batch is split (see ShrinkingBatches)."""

        def run(start: int, stop: int) -> np.ndarray:
            maps = None if noise is None else [n[start:stop] for n in noise]
            return to_uint8(self.networks.G(spatial, style[start:stop], maps))

        return np.concatenate(splits.G(run, len(style)))

    def _encode(self, crops: np.ndarray) -> torch.Tensor:
        return to_model_input(crops, self.device, self.dtype)

    @timed("identity")
    def _identity(self, identities: list[Identity], splits: Splits) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """V and E on the reference photos, averaged: spatial map, pooled identity, and their head pose code."""
        images = self._encode(np.stack([identity.face.crop for identity in identities]))
        codes = splits.V(lambda start, stop: self.networks.V(images[start:stop]), len(images))
        pooled, spatial = (torch.cat(parts) for parts in zip(*codes))
        feature = torch.cat(splits.E(lambda start, stop: self.networks.E(images[start:stop]), len(images)))
        reference_pose = self.networks.E.headpose_code(feature.mean(0, keepdim=True))
        return spatial.mean(0, keepdim=True), pooled.mean(0, keepdim=True), reference_pose

    def _features(self, crops: np.ndarray, code: Callable[[torch.Tensor], torch.Tensor], splits: Splits) -> torch.Tensor:
        """`code(E(crops))` for a batch of aligned crops, split when the device runs out of memory."""
        images = self._encode(crops)
        return torch.cat(splits.E(lambda start, stop: code(self.networks.E(images[start:stop])), len(images)))

    @timed("pose")
    def _pose(self, pose, options: Options, limit: int | None, splits: Splits) -> PoseCodes | None:
        """The head-pose codes of the pose source, none read yet: once per distinct pose frame (only the first
        `limit` frames can be shown), in batches of one size whatever the job's batch_size (so an avatar's codes
        are a photo's); the crops too, for the grid."""
        if pose is None:
            return None
        return PoseCodes(aligned_frames(pose, options.aligned, options.detector, limit),
                         lambda crops: self._features(crops, self.networks.E.headpose_code, splits),
                         self.default_batch_size(), options.mode == "grid", describe(pose))

    @timed("mouth video")
    def _video_mouth_codes(self, options: Options, limit: int | None, splits: Splits) -> torch.Tensor | None:
        """Mouth codes from a video's frames (experimental: the model was trained mainly on audio)."""
        if options.mouth is None:
            return None
        codes = [self._features(np.stack(batch), self.networks.E.mouth_code_from_video, splits)
                 for batch in batched(aligned_frames(options.mouth, options.aligned, options.detector, limit),
                                      self.default_batch_size())]
        if not codes:
            raise InputError(f"mouth: {describe(options.mouth)}: holds no frames")
        return torch.cat(codes)


class Output:
    """Where the frames of one job go: into the mp4, and the faces/frames into the result."""

    def __init__(self, out, size: tuple[int, int], sound, keep_faces: bool, keep_frames: bool):
        self.out = Path(out) if out else None
        self.writer = VideoWriter(out, *size, audio=sound) if out else None
        self.faces: list[np.ndarray] | None = [] if keep_faces else None
        self.frames: list[np.ndarray] | None = [] if keep_frames else None

    def __enter__(self) -> "Output":
        if self.writer is not None:
            self.writer.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.__exit__(*exc)

    def add(self, faces: np.ndarray, frames: list[np.ndarray]) -> None:
        """Write a batch: the generated faces and their output frames."""
        for face, frame in zip(faces, frames):
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
