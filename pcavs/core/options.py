"""Every job option, written once: its default, its allowed values and its help.

`generate`, `Pipeline.__call__`, the `pcavs` command, batch rows and the notebook all take
their options from `Options`; a misspelled name is an error that names the closest valid one,
raised before any model loads.
"""
from __future__ import annotations

import argparse
import difflib
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from .errors import InputError

MODES = ("full", "crop", "grid")
NOISE_MODES = ("fixed", "random")
POSE_LOOPS = ("pingpong", "loop", "hold")
DETECTORS = ("litert", "mediapipe", "face_alignment")
ENHANCERS = ("gfpgan",)
LOUDNESS = ("whole", "running")
FRACTIONS = ("enhance_weight", "enhance_smooth")  # numbers from 0 to 1
DTYPE_NAMES = ("float32", "float16", "bfloat16", "auto")  # auto: bfloat16 on CPUs with bf16 instructions
MODEL_OPTIONS = ("checkpoints", "device", "dtype", "compile")  # how the networks are loaded: see Pipeline.from_pretrained
TRUE, FALSE = ("1", "true", "yes", "y", "on"), ("0", "false", "no", "n", "off", "")


def _option(default: Any, help: str, choices: tuple[str, ...] | None = None, cli: bool = True) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices, "cli": cli})


@dataclass(frozen=True)
class Options:
    """The options of one job (everything but face, audio, pose, out and how the networks are loaded)."""

    mode: str = _option("full", "output frames: the face pasted back into the photo, the 224x224 face, or "
                                "reference | generated | pose side by side", MODES)
    mouth: str | os.PathLike | None = _option(None, "experimental: drive the mouth from this video instead of the audio")
    aligned: bool = _option(False, "the inputs already are 224x224 PC-AVS crops (no face detection)")
    noise: str = _option("fixed", "generator noise: the checkpoint's maps (deterministic) or fresh ones", NOISE_MODES)
    seed: int | None = _option(None, "seed for noise='random'")
    pose_loop: str = _option("pingpong", "how a pose source shorter than the audio repeats", POSE_LOOPS)
    face_index: int | None = _option(None, "which face to use when a photo shows several (0 = the largest)")
    detector: str = _option("litert", "face landmark backend", DETECTORS)
    batch_size: int | None = _option(None, "frames per generator batch (default: 4 on a CPU, 32 on a GPU)")
    loudness: str | None = _option(None, "how the voice's level is set before the mel spectrogram: 'whole' scales the "
                                         "whole clip to RMS 0.1 (as the reference; the default for a file), 'running' "
                                         "scales each 10 ms by the RMS of the audio up to it, at most 10x (what a live "
                                         "stream can do; the default for chunks)", LOUDNESS)
    enhance: str | None = _option(None, "restore every face with GFPGAN v1.4 (512x512 detail, pasted back at the "
                                        "photo's resolution; its weights are downloaded on first use)", ENHANCERS)
    enhance_weight: float = _option(1.0, "0...1: how much of the restored face to show, blended with the unrestored one")
    enhance_smooth: float = _option(0.0, "0...1: temporal smoothing of the restored detail against flicker "
                                         "(0: none; 0.5 averages about 3 frames)")
    enhance_checkpoint: str | os.PathLike | None = _option(None, "GFPGANv1.4.pth to use (default: $PCAVS_GFPGAN, "
                                                                  "else the user cache)")
    return_frames: bool = _option(False, "keep result.faces and result.frames", cli=False)
    return_faces: bool = _option(False, "keep result.faces (the generated 224x224 faces), e.g. to score them", cli=False)
    progress: bool = _option(True, "show a progress bar", cli=False)

    def __post_init__(self) -> None:
        for spec in fields(self):
            value, choices = getattr(self, spec.name), spec.metadata["choices"]
            if choices and value not in choices and not (value is None and spec.default is None):
                raise InputError(f"{spec.name}: {value!r} is not one of {', '.join(choices)}")
        for name in ("seed", "face_index", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InputError(f"{name}: {value!r} must be a whole number")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch_size: {self.batch_size!r} must be a positive integer")
        if self.face_index is not None and self.face_index < 0:
            raise InputError(f"face_index: {self.face_index!r} must be 0 (the largest face) or more")
        for name in FRACTIONS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise InputError(f"{name}: {value!r} must be a number from 0 to 1")
        if self.enhance_smooth == 1:
            raise InputError("enhance_smooth: 1 would freeze the restored detail of the first frame; use up to 0.9")
        if self.enhance_checkpoint is not None and not isinstance(self.enhance_checkpoint, (str, os.PathLike)):
            raise InputError("enhance_checkpoint: give the path of GFPGANv1.4.pth (or of its folder)")
        if self.mouth is not None and not isinstance(self.mouth, (str, os.PathLike)):
            raise InputError("mouth: give the path of a video (or a folder of frames) whose mouth motion drives the face")

    def update(self, **changes: Any) -> "Options":
        """A copy with `changes` applied, validated like `job_options`."""
        _check_names(changes)
        return replace(self, **changes)

    @classmethod
    def from_strings(cls, values: Mapping[str, str | None]) -> "Options":
        """Options from text (a CSV row, a form): '' means the default; numbers and yes/no are parsed."""
        _check_names(values)
        parsed = {}
        for spec in fields(cls):
            text = values.get(spec.name)
            if text is None or str(text).strip() == "":
                continue
            parsed[spec.name] = _parse(spec.name, str(text).strip(), spec.default)
        return cls(**parsed)


def names() -> tuple[str, ...]:
    return tuple(spec.name for spec in fields(Options))


def job_options(**kwargs: Any) -> Options:
    """Validated `Options` from keyword arguments; an unknown name raises InputError naming the closest one."""
    _check_names(kwargs)
    return Options(**kwargs)


def _check_names(given: Mapping[str, Any]) -> None:
    for name in given:
        if name not in names():
            known = names() + MODEL_OPTIONS
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"valid options: {', '.join(known)}"
            raise InputError(f"unknown option {name!r}; {hint}")


def _parse(name: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise InputError(f"{name}: {text!r} is not yes or no")
    if name in ("seed", "face_index", "batch_size"):
        try:
            return int(text)
        except ValueError:
            raise InputError(f"{name}: {text!r} must be a whole number") from None
    if name in FRACTIONS:
        try:
            return float(text)
        except ValueError:
            raise InputError(f"{name}: {text!r} must be a number from 0 to 1") from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per job option (`--mouth` belongs to `generate` only; progress is `--quiet`)."""
    for spec in fields(Options):
        if not spec.metadata["cli"] or spec.name == "mouth":
            continue
        flag = "--" + spec.name.replace("_", "-")
        if isinstance(spec.default, bool):
            parser.add_argument(flag, action="store_true", help=spec.metadata["help"])
        else:
            kind = int if spec.name in ("seed", "face_index", "batch_size") else float if spec.name in FRACTIONS else str
            choices = spec.metadata["choices"]
            shown = f" (default: {spec.default})" if spec.default is not None else ""
            parser.add_argument(flag, type=kind, choices=choices, default=spec.default, help=spec.metadata["help"] + shown)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def from_arguments(args: argparse.Namespace) -> Options:
    """The `Options` a parsed command line asks for."""
    given = {spec.name: getattr(args, spec.name) for spec in fields(Options) if hasattr(args, spec.name)}
    return Options(**given, progress=not args.quiet)
