"""Hours of audio stream in flat memory; no shell strings; OOM splitting keeps the frames; properties of the
audio front-end and alignment. Each bad input of the README's catalogue is tested in test_catalogue.py."""
from __future__ import annotations

import ast
import math
import signal
import subprocess
import sys
import time
import warnings
from unittest.mock import ANY
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pcavs
from pcavs.media.audio import load_speech
from pcavs.models import mel
from pcavs.faces.align import ANCHOR_TARGETS, similarity_transform
from pcavs.core.assets import DEMO_FACE
from pcavs.core.errors import OutOfMemoryError

from support.kits import INPUTS
from support.media import tone
from support.av import ffmpeg

CROP = str(INPUTS / "identity" / "000000.png")
HOURS = 2
PEAK_LIMIT = 3 * 1024**3  # issue 5: a long job's resident memory stays under 3 GB


@pytest.fixture(scope="module")
def hours_of_speech(tmp_path_factory) -> Path:
    """Two hours of a 16 kHz voice-like tone (230 MB of wav)."""
    path = tmp_path_factory.mktemp("long") / "two hour talk.wav"
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=180:beep_factor=3:sample_rate=16000:duration={HOURS * 3600}",
           "-c:a", "pcm_s16le", str(path))
    return path


def peak_rss(pid: int) -> int:
    """The process's own peak resident memory in bytes (VmHWM: its address space's high-water mark)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def start_and_interrupt(command: list[str], out: Path) -> tuple[int, int, str]:
    """Run `command` until its video is being written, then press Ctrl-C: (exit status, peak RSS bytes, stderr)."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not list(out.parent.glob(f".{out.name}.*.part")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(5)  # a few frames into the two hours
    peak = peak_rss(process.pid) if process.poll() is None else 0
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, peak, stderr


@pytest.mark.slow
@pytest.mark.parametrize("interface", ["api", "cli"])
def test_hours_long_audio_streams_in_flat_memory(tmp_path, hours_of_speech, interface):
    out = tmp_path / "talk.mp4"
    if interface == "api":
        command = [sys.executable, "-c", "import sys, pcavs; pcavs.generate(face=sys.argv[1], audio=sys.argv[2], "
                   "out=sys.argv[3], mode='crop', progress=False)", str(DEMO_FACE), str(hours_of_speech), str(out)]
    else:
        command = [sys.executable, "-m", "pcavs", "generate", "--face", str(DEMO_FACE), "--audio", str(hours_of_speech),
                   "--out", str(out), "--mode", "crop", "--quiet"]
    status, peak, stderr = start_and_interrupt(command, out)
    print(f"{HOURS} h of audio, {interface}: peak RSS {peak / 2**20:.0f} MB")
    assert status in (130, -signal.SIGINT), stderr  # stopped by Ctrl-C while generating, not by an error
    assert peak < PEAK_LIMIT
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    if interface == "cli":
        assert stderr.strip().splitlines()[-1] == "pcavs: interrupted; no output was written"


def run(pipeline, audio_path, **options):
    return pipeline(face=CROP, audio=audio_path, out=None, aligned=True, progress=False, **options)


def test_gpu_out_of_memory_splits_the_batch(tmp_path, pipeline, monkeypatch):
    voice = tmp_path / "voice.wav"
    sf.write(voice, tone(4 * 640 / 16000, 16000), 16000)
    expected = run(pipeline, voice, batch_size=4).faces
    generator = pipeline.networks.G
    original = type(generator).forward

    def small_memory(self, spatial, style, noise=None):
        if len(style) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, spatial, style, noise)

    monkeypatch.setattr(type(generator), "forward", small_memory)
    split = run(pipeline, voice, batch_size=4).faces  # same frames, up to float rounding of other batch sizes
    assert split.shape == expected.shape and np.abs(split.astype(int) - expected.astype(int)).max() <= 2
    monkeypatch.setattr(type(generator), "forward", lambda self, *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")))
    with pytest.raises(OutOfMemoryError, match="out of memory even for one frame"):
        run(pipeline, voice, batch_size=1)


# Functions that start a process, by module. Those in SHELL_ONLY always hand a string to a shell.
PROCESS_STARTERS = {
    "subprocess": {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"},
    "os": {"system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv",
           "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "posix_spawn", "posix_spawnp"},
    "asyncio": {"create_subprocess_exec", "create_subprocess_shell"},
    "asyncio.subprocess": {"create_subprocess_exec", "create_subprocess_shell"},
    "pty": {"spawn"},
}
SHELL_ONLY = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput", "asyncio.create_subprocess_shell",
              "asyncio.subprocess.create_subprocess_shell"}


def process_calls(tree: ast.Module) -> list[tuple[str, ast.Call, list[ast.AST]]]:
    """(qualified name, call, its enclosing nodes) for each call in `tree` that starts a process,
    whatever name the function was imported under (`import subprocess as sp`, `from os import system`)."""
    names: dict[str, str] = {}  # local name -> qualified name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def qualified(node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return names.get(node.id)
        if isinstance(node, ast.Attribute):
            base = qualified(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    found = []

    def visit(node: ast.AST, parents: list[ast.AST]) -> None:
        if isinstance(node, ast.Call):
            name = qualified(node.func)
            module, _, function = (name or "").rpartition(".")
            if function in PROCESS_STARTERS.get(module, ()):
                found.append((name, node, parents))
        for child in ast.iter_child_nodes(node):
            visit(child, parents + [node])

    visit(tree, [])
    return found


def is_argument_list(command: ast.AST, parents: list[ast.AST]) -> bool:
    """Whether `command` is visibly a list or tuple: a display, a sum of them, or a name that the
    enclosing function (or the module) only ever assigns such a value to."""
    if isinstance(command, (ast.List, ast.Tuple)):
        return True
    if isinstance(command, ast.BinOp) and isinstance(command.op, ast.Add):
        return is_argument_list(command.left, parents) and is_argument_list(command.right, parents)
    if isinstance(command, ast.Name):
        scope = next((p for p in reversed(parents) if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module))), None)
        values = [node.value for node in ast.walk(scope) if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
                  and any(isinstance(target, ast.Name) and target.id == command.id
                          for target in (node.targets if isinstance(node, ast.Assign) else [node.target]))]
        return bool(values) and all(is_argument_list(v, parents) for v in values)
    return False


def shell_problems(path: Path) -> tuple[int, list[str]]:
    """(number of process-starting calls, what is wrong with them) in one source file."""
    problems = []
    calls = process_calls(ast.parse(path.read_text(), str(path)))
    for name, call, parents in calls:
        where = f"{path}:{call.lineno} {name}"
        if name in SHELL_ONLY:
            problems.append(f"{where}: always runs a shell")
            continue
        for keyword in call.keywords:
            if keyword.arg is None:
                problems.append(f"{where}: **kwargs may hide shell=True")
            elif keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                problems.append(f"{where}: shell={ast.unparse(keyword.value)}")
        if name.endswith(".create_subprocess_exec"):
            continue  # its arguments are the argument list, one by one
        command = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "args"), None)
        if command is None or isinstance(command, ast.Starred) or not is_argument_list(command, parents):
            problems.append(f"{where}: the command is not visibly a list or tuple ({ast.unparse(command) if command else 'none'})")
    return len(calls), problems


def test_no_shell_strings():
    """Every call that starts a process, in every module of the package, gets an argument list and no shell."""
    package = Path(pcavs.__file__).parent
    starting, problems = set(), []
    for path in sorted(package.rglob("*.py")):
        count, found = shell_problems(path)
        if count:
            starting.add(path.relative_to(package.parent).as_posix())
        problems += found
    # ffmpeg starts in one module, and the batch's worker (a fresh Python) in another (the checker sees both)
    assert starting == {"pcavs/media/ffmpeg.py", "pcavs/batches/local.py"}, starting
    assert problems == []


def test_shell_checker_catches_shell_strings(tmp_path):
    """The checker itself: each way of reaching a shell, or a command string, is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os, subprocess as sp\n"
        "from subprocess import Popen as P, check_output\n"
        "import asyncio, asyncio.subprocess\n"
        "def f(cmd, opts):\n"
        "    line = 'ffmpeg -i x'\n"
        "    sp.run(['ls'], shell=True)\n"
        "    P('ffmpeg -i x')\n"
        "    check_output(line)\n"
        "    sp.run(cmd)\n"
        "    sp.call(['ls'], **opts)\n"
        "    os.system('ls')\n"
        "    asyncio.create_subprocess_shell('ls')\n"
        "    args = ['ffmpeg'] + ['-i', 'x']\n"
        "    sp.run(args, shell=False)\n"
        "    asyncio.create_subprocess_exec('ffmpeg', '-i', 'x')\n"
        "    asyncio.subprocess.create_subprocess_shell('ls')\n"
    )
    count, problems = shell_problems(bad)
    assert count == 10
    assert [p.split(":")[1].split(" ")[0] for p in problems] == ["6", "7", "8", "9", "10", "11", "12", "16"], problems


@settings(max_examples=12, deadline=None)
@given(
    seconds=st.floats(min_value=0.05, max_value=1.5),
    rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
    channels=st.integers(min_value=1, max_value=3),
)
def test_audio_front_end_properties(tmp_path_factory, seconds, rate, channels):
    path = tmp_path_factory.mktemp("prop") / "a.wav"
    sf.write(path, tone(seconds, rate, channels), rate)
    samples = mel.normalize_rms(load_speech(path))
    assert abs(len(samples) - seconds * 16000) <= 2 + 16000 / rate
    frames = mel.num_frames(len(samples))
    assert frames == math.ceil(len(samples) / 640)
    windows = mel.frame_windows(mel.mel_spectrogram(samples), np.arange(frames))
    assert windows.shape == (frames, 1, 80, 20)
    assert np.isfinite(windows).all() and windows.min() >= 0 and windows.max() <= 1


@settings(max_examples=50, deadline=None)
@given(
    scale=st.floats(min_value=0.05, max_value=20),
    degrees=st.floats(min_value=-180, max_value=180),
    dx=st.floats(min_value=-5000, max_value=5000),
    dy=st.floats(min_value=-5000, max_value=5000),
)
def test_similarity_transforms_are_recovered(scale, degrees, dx, dy):
    angle = math.radians(degrees)
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    source = ANCHOR_TARGETS @ rotation.T + (dx, dy)
    matrix = similarity_transform(source, ANCHOR_TARGETS)
    assert np.allclose(source @ matrix[:, :2].T + matrix[:, 2], ANCHOR_TARGETS, atol=1e-6)


@pytest.mark.parametrize("native", [False, True])
def test_bfloat16_on_a_cpu_without_it_warns(monkeypatch, native):
    from pcavs.generation.pipeline import resolve_dtype

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    monkeypatch.setattr("pcavs.core.devices.cpu_flags", lambda: frozenset({"avx512_bf16"}))  # as the CPU lists it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert [str(w.message) for w in caught if "no bfloat16 instructions" in str(w.message)] == ([] if native else [ANY])
