"""Where the networks run: the device and dtype a user asks for, memory reuse on the CPU, and batches
that shrink when the device runs out of memory.

The glibc settings: the generator frees and reallocates activations of tens to hundreds of MB
per batch. glibc serves blocks that large with fresh mmaps by default, and page-faulting them in
again each time cost about a fifth of the CPU time of a frame (measured: 0.79 -> 0.62 s per frame
at batch 2 on a 2-core AVX2 CPU). With `reuse_freed_memory()` they come from the heap and are
reused; the process keeps its peak working set until it exits.
"""
from __future__ import annotations

import ctypes
import functools
import sys
import warnings
from typing import Callable, TypeVar

import torch

from .errors import InputError, OutOfMemoryError

T = TypeVar("T")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
REUSE_LIMIT = 1 << 30  # freed blocks up to 1 GB are kept for reuse
# torch >= 2.5 names the error torch.OutOfMemoryError; older releases only torch.cuda.OutOfMemoryError (the same class)
OUT_OF_MEMORY = tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError})


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU; a device that is not there is an InputError."""
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
    """The network precision: float32 unless asked; float16 only on GPUs; bfloat16 warns on CPUs without bf16
    instructions; "auto" is bfloat16 on CPUs with them (AVX512_BF16 or AMX), else float32.

    Why "auto" takes bfloat16 there (measured on a 2-core EPYC with AVX512_BF16, weights synthesized by the
    conformance kits' rules): the generator runs 1.9-2.1x faster, GFPGAN 1.6x, and the 224 faces move by at
    most 5 grey levels (mean 0.5) from float32, restored faces by at most 2 (mean 0.3); the test of
    tests/models/test_dtypes.py holds those bounds. It stays opt-in (None is float32) because the conformance
    kits and the published videos are float32, and GPUs keep float32 under "auto" until measured on them.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str) and dtype == "auto":
        return torch.bfloat16 if device.type == "cpu" and has_bf16_instructions() else torch.float32
    resolved = DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if resolved not in DTYPES.values():
        raise InputError(f"dtype: {dtype!r} is not supported; use float32, float16, bfloat16 or auto")
    if resolved == torch.float16 and device.type == "cpu":
        raise InputError("dtype: float16 is for GPUs; on the CPU use dtype='bfloat16' or float32")
    if resolved == torch.bfloat16 and device.type == "cpu" and not has_bf16_instructions():
        warnings.warn("dtype: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX), so bfloat16 runs far "
                      "slower than float32 here (100x on one we measured); leave dtype unset", stacklevel=3)
    return resolved


BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def has_bf16_instructions() -> bool:
    """Whether this CPU computes bfloat16 natively: oneDNN's check, and where Linux lists the CPU's flags, one of
    avx512_bf16 or amx_bf16 too (oneDNN's check also says yes on AVX-512 CPUs without them, which only emulate it)."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    flags = cpu_flags()
    return flags is None or any(flag in flags for flag in BF16_FLAGS)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's flags as Linux lists them in /proc/cpuinfo; None where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def reuse_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): leave the allocator alone
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, REUSE_LIMIT)) and bool(mallopt(M_TRIM_THRESHOLD, REUSE_LIMIT))


class ShrinkingBatches:
    """Runs work over consecutive slices of items, as large as allowed; when the device runs out of memory
    the slice that failed is halved (down to one item) and that smaller size is kept from then on.

    The retry starts after the failed attempt's exception is gone, so its tensors are freed first.
    """

    def __init__(self, device: torch.device, what: str, unit: str):
        self.device = device
        self.what = what  # names the network in the error: "the generator", "GFPGAN", ...
        self.unit = unit  # what one item is: "frame", "face", ...
        self.limit: int | None = None  # the largest batch known to fit; None until one did not

    def __call__(self, work: Callable[[int, int], T], count: int, size: int | None = None) -> list[T]:
        """[work(start, stop), ...] over slices covering range(count), in order, each at most `size` long."""
        done, start = [], 0
        while start < count:
            stop = min(count, start + min(size or count, self.limit or count))
            try:
                done.append(work(start, stop))
                start = stop
                continue
            except OUT_OF_MEMORY:
                failed = stop - start
            if failed == 1:
                raise OutOfMemoryError(
                    f"{self.device}: out of memory even for one {self.unit} ({self.what}); close other work on the "
                    "device, use dtype='float16' or 'bfloat16', or device='cpu'")
            self.limit = failed // 2
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return done
