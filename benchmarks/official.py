"""pcavs side by side with the official code, alternating on the same inputs and the same synthesized weights.

    python benchmarks/official.py --official DIR [--rounds 3] [--json PATH]

DIR holds checkouts of the three official repositories (we do not ship them; README "Speed" says how to get
them), found by name: *PC-AVS* (Hangz-nju-cuhk/Talking-Face_PC-AVS), *GFPGAN* (TencentARC/GFPGAN) and
*syncnet_python* (joonson/syncnet_python). Each row is left out when its code is not there.

- generator: the official `ModulateGenerator` (models/networks/generator.py, the demo's options: 224 px,
  style_dim 2560, style_feature_loss) against pcavs's G, batch 4, the PC-AVS kit's synthesized weights,
  the stored noise maps on both sides; seconds per frame and the largest output difference.
- GFPGAN: the official `GFPGANv1Clean` (v1.4's options) against pcavs's restorer network, one 512 face (the
  GFPGAN kit's), the kit's synthesized weights, stored noise; seconds per face.
- SyncNet: the official `SyncNetInstance.evaluate()` against `pcavs.evaluate` on the syncnet kit's 6.4 s
  video, both through ffmpeg, synthesized weights; seconds per second of video, and both LSE-D / LSE-C.

Only what the official modules import but never run here is stood in for: basicsr's arch registry and
weight initialiser (the weights are loaded over them), PC-AVS's package `__init__` (it imports the losses
and discriminators), and `.cuda()` (the official SyncNet code calls it unconditionally; here it runs on
the CPU). Each side runs `--rounds` times in turn after one warm-up; the figures are medians.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
GFLOP = {"generator": 69.4, "gfpgan": 395.5, "syncnet": 90.0}


def find(folder: Path, pattern: str) -> Path | None:
    found = sorted(p for p in folder.glob(pattern) if p.is_dir())
    return found[0] if found else None


def load_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def package(name: str, path: Path, **attributes) -> types.ModuleType:
    """An empty package at `path` (its __init__ is not run), so single modules under it import."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def alternate(sides: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each side's callable, run in turn `rounds` times after one warm-up each."""
    for run in sides.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def generator_row(repo: Path, weights: Path, rounds: int) -> dict:
    from pcavs.models.checkpoint import read_state_dict
    from pcavs.models.weights import load_networks

    package("models", repo / "models")
    base = load_module("models.networks.base_network", repo / "models" / "networks" / "base_network.py")
    package("models.networks", repo / "models" / "networks", BaseNetwork=base.BaseNetwork)
    official_module = load_module("models.networks.generator", repo / "models" / "networks" / "generator.py")
    opt = types.SimpleNamespace(crop_size=224, feature_encoded_dim=2560, style_dim=2560, style_feature_loss=True)
    official = official_module.ModulateGenerator(opt).eval()
    state = read_state_dict(weights / "latest_net_G.pth", "latest_net_G.pth", "")
    missing, unexpected = official.load_state_dict(state, strict=False)
    ours = load_networks(weights).G.eval()
    batch = 4
    generator = torch.Generator().manual_seed(0)
    spatial = torch.randn(1, 512, 7, 7, generator=generator)
    style = torch.randn(batch, 2560, generator=generator)
    results = {}

    def run_official():
        with torch.inference_mode():
            results["official"] = official([style], identity_style=spatial.expand(batch, -1, -1, -1).contiguous(),
                                           randomize_noise=False)[0]

    def run_ours():
        with torch.inference_mode():
            results["pcavs"] = ours(spatial, style)

    seconds = alternate({"official": run_official, "pcavs": run_ours}, rounds)
    return {"item": "frame", "official": seconds["official"] / batch, "pcavs": seconds["pcavs"] / batch,
            "max_output_difference": float((results["official"] - results["pcavs"]).abs().max()),
            "official_keys_missing": [k for k in missing if not k.startswith("style.")], "batch": batch}


def gfpgan_row(repo: Path, folder: Path, rounds: int) -> dict:
    from support.gfpgan_weights import write_checkpoint
    from pcavs.models.pixels import to_tensor
    from pcavs.restore.weights import load_gfpgan

    registry = types.SimpleNamespace(register=lambda *a, **k: (lambda cls: cls))
    package("basicsr", folder)
    package("basicsr.utils", folder, registry=None)
    sys.modules["basicsr.utils.registry"] = types.SimpleNamespace(ARCH_REGISTRY=registry)
    package("basicsr.archs", folder)
    sys.modules["basicsr.archs.arch_util"] = types.SimpleNamespace(default_init_weights=lambda *a, **k: None)
    package("gfpgan_official_archs", repo / "gfpgan" / "archs")
    arch = importlib.import_module("gfpgan_official_archs.gfpganv1_clean_arch")
    official = arch.GFPGANv1Clean(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                                  fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1,
                                  sft_half=True).eval()
    checkpoint = write_checkpoint(folder)
    official.load_state_dict(torch.load(checkpoint, map_location="cpu")["params_ema"], strict=True)
    ours = load_gfpgan(checkpoint).eval()
    face = cv2.cvtColor(cv2.imread(str(ROOT / "tests" / "data" / "gfpgan" / "input_000000.png")), cv2.COLOR_BGR2RGB)
    x = to_tensor(face[None], torch.device("cpu"), torch.float32).contiguous()
    results = {}

    def run_official():
        with torch.inference_mode():
            results["official"] = official(x, return_rgb=False, randomize_noise=False)[0]

    def run_ours():
        with torch.inference_mode():
            results["pcavs"] = ours(x)

    seconds = alternate({"official": run_official, "pcavs": run_ours}, rounds)
    return {"item": "face", "official": seconds["official"], "pcavs": seconds["pcavs"],
            "max_output_difference": float((results["official"] - results["pcavs"]).abs().max())}


@contextlib.contextmanager
def quiet():
    """Both descriptors 1 and 2 to /dev/null (the official code prints, and its ffmpeg calls print)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def syncnet_row(repo: Path, folder: Path, rounds: int) -> dict:
    from support import syncnet_weights
    from pcavs.media.ffmpeg import ffmpeg_exe
    from pcavs.metrics.evaluate import evaluate
    from pcavs.metrics.syncnet import load_syncnet

    binaries = folder / "bin"  # the official code runs `ffmpeg` from PATH: pcavs's own
    binaries.mkdir(exist_ok=True)
    if not (binaries / "ffmpeg").exists():
        (binaries / "ffmpeg").symlink_to(ffmpeg_exe())
    os.environ["PATH"] = f"{binaries}{os.pathsep}{os.environ['PATH']}"
    torch.nn.Module.cuda = lambda self, *a, **k: self  # the official code calls .cuda() unconditionally
    torch.Tensor.cuda = lambda self, *a, **k: self
    sys.path.insert(0, str(repo))
    instance_module = importlib.import_module("SyncNetInstance")
    weights = syncnet_weights.write(folder / "syncnet_v2.model")
    official = instance_module.SyncNetInstance()
    official.loadParameters(str(weights))
    net = load_syncnet(weights)
    video = ROOT / "tests" / "data" / "syncnet" / "sync.mp4"
    opt = types.SimpleNamespace(tmp_dir=str(folder / "syncnet_tmp"), reference="bench", batch_size=20, vshift=15)
    results = {}

    def run_official():
        with quiet(), torch.inference_mode():
            results["official"] = official.evaluate(opt, videofile=str(video))

    def run_ours():
        results["pcavs"] = evaluate(video, syncnet=net, device="cpu", progress=False)

    seconds = alternate({"official": run_official, "pcavs": run_ours}, rounds)
    offset, conf, dists = results["official"]  # evaluate() returns offset, LSE-C and the distances (N, 31)
    minval = dists.mean(0).min()
    ours = results["pcavs"]
    duration = ours.num_frames / 25
    return {"item": "second of video", "official": seconds["official"] / duration, "pcavs": seconds["pcavs"] / duration,
            "official_scores": {"offset": int(offset), "lse_d": float(minval), "lse_c": float(conf)},
            "pcavs_scores": {"offset": ours.offset, "lse_d": ours.lse_d, "lse_c": ours.lse_c}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", default=os.environ.get("PCAVS_OFFICIAL", "official"),
                        help="folder with the official checkouts (default $PCAVS_OFFICIAL, else ./official)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--only", choices=("generator", "gfpgan", "syncnet"), action="append")
    args = parser.parse_args()
    from pcavs.core.devices import reuse_freed_memory

    reuse_freed_memory()  # as pcavs does; the official side runs in the same process, with the same allocator
    official = Path(args.official)
    repos = {"generator": find(official, "*PC-AVS*"), "gfpgan": find(official, "*GFPGAN*"),
             "syncnet": find(official, "*syncnet_python*")}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, repo in repos.items():
            if args.only and name not in args.only:
                continue
            if repo is None:
                print(f"{name}: the official code is not under {official}; left out")
                continue
            if name == "generator":
                from support.pcavs_weights import write_checkpoints

                write_checkpoints(folder)
                row = generator_row(repo, folder, args.rounds)
            elif name == "gfpgan":
                row = gfpgan_row(repo, folder, args.rounds)
            else:
                row = syncnet_row(repo, folder, args.rounds)
            row["speedup"] = row["official"] / row["pcavs"]
            row["official_gflops"] = GFLOP[name] / row["official"]
            row["pcavs_gflops"] = GFLOP[name] / row["pcavs"]
            rows[name] = row
            extra = {k: v for k, v in row.items() if k not in ("item", "official", "pcavs", "speedup")}
            print(f"{name:<10} official {row['official']:.3f} s/{row['item']}, pcavs {row['pcavs']:.3f} "
                  f"-> {row['speedup']:.2f}x  {extra}", flush=True)
    figures = {"load_average_end": os.getloadavg(), "threads": torch.get_num_threads(), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
