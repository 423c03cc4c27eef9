"""SyncNet scored as the official code scores: strict loading of `syncnet_v2.model`, the MFCC, the windows and
the scores against the syncnet_conformance kit's golden arrays (the compact subset in tests/data/syncnet
always; every array of ../shared/syncnet_conformance when it is there), and `pcavs download syncnet` from
a loopback server (never the network)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import wave
from dataclasses import dataclass, replace

import cv2
import numpy as np
import pytest
import torch

from support import syncnet_weights as syncnet_weights
from support.kits import DATA, require_kit
from support.loopback import serve
from pcavs.metrics import evaluate, lipsync
from pcavs.app.cli import main
from pcavs.core.errors import InputError, NetworkError, OutOfMemoryError, WeightsError
from pcavs.metrics.mfcc import mfcc
from pcavs.metrics.syncnet import FILENAME, SyncNet, load_syncnet
from pcavs.models import registry
from pcavs.models.download import download_syncnet, ensure
from pcavs.models.registry import SYNCNET, Published, find

PUBLISHED, URL = SYNCNET.published, SYNCNET.url

KIT = "syncnet_conformance"
HERE = DATA / "syncnet"
TOLERANCE = 1e-4  # the kit's: embeddings, distances, LSE-D, LSE-C, confidences
MFCC_TOLERANCE = 1e-6
EXACT = {"frames", "im_batch0", "audio", "offset", "min_length", "num_windows"}
# the MFCC is float64 (differences ~1e-12); its float32 copy may then round one ulp apart (the kit calls it exact:
# it is, but for delay3's silent frames, whose coefficients are 0 up to 1e-13 either way)
LIMITS = {"mfcc": MFCC_TOLERANCE, "cc_batch0": 1e-5}


@dataclass
class Scored:
    frames: lipsync.Frames
    samples: np.ndarray
    lip: torch.Tensor
    aud: torch.Tensor
    scores: lipsync.SyncScores

    def arrays(self) -> dict[str, np.ndarray]:
        """The kit's names for what we computed."""
        s = self.scores
        frames = self.frames[0 : len(self.frames)]
        windows = min(len(frames), len(self.samples) // 640)
        return {
            "frames": frames, "im_batch0": lipsync.lip_batch(frames[:24], 20).numpy(), "audio": self.samples,
            "mfcc": mfcc(self.samples), "cc_batch0": lipsync.audio_batch(torch.from_numpy(mfcc(self.samples)).float(), 0, 20).numpy(),
            "im_feat": self.lip.numpy(), "cc_feat": self.aud.numpy(), "dists": s.dists, "mdist": s.mdist, "minval": s.minval,
            "conf": s.conf, "offset": s.offset, "fdist": s.fdist, "fconf": s.fconf, "fconfm": s.fconfm,
            "min_length": windows, "num_windows": s.num_windows,
        }


def sha256(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def max_diff(ours, golden) -> float:
    return float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(golden, np.float64))))


def check(name: str, ours, golden) -> float:
    """Compare one array with its golden: exact where the kit says exact, else within its tolerance."""
    ours, golden = np.asarray(ours), np.asarray(golden)
    assert ours.shape == golden.shape, (name, ours.shape, golden.shape)
    diff = max_diff(ours, golden)
    limit = 0.0 if name in EXACT else LIMITS.get(name, TOLERANCE)
    assert diff <= limit, f"{name}: max |diff| {diff:.3g} > {limit:g}"
    return diff


@pytest.fixture(scope="module")
def net(syncnet_file) -> SyncNet:
    return load_syncnet(syncnet_file)


@pytest.fixture(scope="module")
def compact() -> dict[str, np.ndarray]:
    with np.load(HERE / "golden_compact.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def scored(net, tmp_path_factory):
    """Each case through the scorer once per module: `scored(case)`."""
    done: dict[str, Scored] = {}

    def run(case: str) -> Scored:
        if case not in done:
            folder = tmp_path_factory.mktemp(case)
            if case == "raw":  # the kit's lossless inputs, no ffmpeg
                inputs = require_kit(KIT) / "inputs"
                frames = np.stack([cv2.imread(str(p)) for p in sorted((inputs / "frames").glob("*.png"))])
                with wave.open(str(inputs / "speech.wav"), "rb") as wav:
                    samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").copy()
            else:
                video = HERE / f"{case}.mp4"
                frames, samples = lipsync.extract_frames(video, folder), lipsync.extract_audio(video, folder)
            lip, aud = lipsync.embed(net, frames, samples)
            done[case] = Scored(frames, samples, lip, aud, lipsync.score(lip, aud))
        return done[case]

    return run


# ---------------------------------------------------------------- golden arrays


@pytest.mark.parametrize("case", ["sync", pytest.param("delay3", marks=pytest.mark.slow)])
def test_compact_golden(case, scored, compact):
    """The mp4 cases through our ffmpeg, MFCC, network and scoring match the repository's golden subset."""
    run = scored(case)
    ours = run.arrays()
    assert sha256(run.samples) == str(compact[f"{case}_audio_sha256"]) and len(run.samples) == compact[f"{case}_audio_length"]
    if case == "sync":
        assert sha256(ours["frames"]) == str(compact["sync_frames_sha256"])
        assert sha256(ours["im_batch0"].astype(np.uint8)) == str(compact["sync_im_batch0_sha256"])
        assert np.array_equal(ours["im_batch0"], ours["im_batch0"].round())  # the float tensor holds whole pixel values
    for name in lipsync_names():
        check(name, ours[name], compact[f"{case}_{name}"])
    rows = compact["embedding_rows"]
    check("im_feat", ours["im_feat"][rows], compact[f"{case}_im_feat_rows"])
    check("cc_feat", ours["cc_feat"][rows], compact[f"{case}_cc_feat_rows"])


def lipsync_names() -> tuple[str, ...]:
    return ("mfcc", "dists", "mdist", "fdist", "fconf", "fconfm", "minval", "conf", "offset", "min_length", "num_windows")


@pytest.mark.slow
def test_delay3_offset_is_the_official_one(scored, compact):
    """Audio delayed by 3 frames: the offset the official code gives on the same weights (0: these weights know no
    lip sync), while every audio-side number moves."""
    sync, delay = scored("sync").scores, scored("delay3").scores
    assert delay.offset == int(compact["delay3_offset"]) == 0
    assert abs(delay.minval - sync.minval) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("case", ["sync", "delay3", "raw"])
def test_full_kit_golden(case, scored):
    """Every golden array of the kit, within the kit's tolerances."""
    kit = require_kit(KIT)
    with np.load(kit / "golden.npz") as golden:
        expected = {key[len(case) + 1 :]: golden[key] for key in golden.files if key.startswith(case + "_")}
        if case == "delay3":  # same video stream as sync
            expected.update(frames=golden["sync_frames"], im_batch0=golden["sync_im_batch0"])
        meta = json.loads(str(golden["meta_json"]))
    ours = scored(case).arrays()
    if case == "raw":
        expected.pop("frames", None)
        expected.pop("im_batch0", None)
    diffs = {name: check(name, ours[name], value) for name, value in expected.items()}
    assert set(diffs) >= {"mfcc", "im_feat", "cc_feat", "dists", "mdist", "minval", "conf", "offset", "fconfm"}
    if case != "raw":
        assert (HERE / f"{case}.mp4").read_bytes() == (kit / "inputs" / f"{case}.mp4").read_bytes()
    if case == "sync":  # the JPEGs themselves: our ffmpeg call writes the official files byte for byte
        files = scored(case).frames.files
        assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in files] == meta["cases"]["jpeg_sha256_sync"]


def test_synthesized_weights_follow_the_kit(tmp_path):
    """tests/syncnet_weights.py gives the kit's make_weights.py tensors, key for key, in the saved order."""
    kit = require_kit(KIT)
    assert json.loads((kit / "manifest.json").read_text()) == syncnet_weights.manifest()
    spec = importlib.util.spec_from_file_location("syncnet_make_weights", kit / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    theirs, ours = module.synth_state_dict(), syncnet_weights.state_dict()
    assert list(theirs) == list(ours)
    for key in theirs:
        assert torch.equal(theirs[key], ours[key]), key


# ---------------------------------------------------------------- loading


def test_loads_the_release_container_with_or_without_counters(tmp_path, syncnet_file):
    state = syncnet_weights.state_dict()
    plain = load_syncnet(syncnet_file)
    assert torch.equal(plain.state_dict()["netcnnlip.0.weight"], state["netcnnlip.0.weight"])
    assert not plain.training and not any(p.requires_grad for p in plain.parameters())
    counters = dict(state, **{key: torch.tensor(7) for key, _, _ in syncnet_weights.manifest()["absent"]})
    with_counters = load_syncnet(syncnet_weights.write(tmp_path / "counters.model", counters))
    zipped = tmp_path / "zip.model"
    torch.save(state, zipped)  # the current (zip) format loads too
    frames = torch.rand(2, 3, 5, 224, 224) * 255
    with torch.no_grad():
        expected = plain.lip(frames)
        assert torch.equal(with_counters.lip(frames), expected) and torch.equal(load_syncnet(zipped).lip(frames), expected)


def _edited(change: str) -> dict:
    state = syncnet_weights.state_dict()
    if change == "missing":
        del state["netfcaud.3.bias"]
    elif change == "unexpected":
        state["netfcaud.4.weight"] = torch.zeros(3)
    elif change == "shape":
        state["netcnnlip.0.weight"] = torch.zeros(96, 3, 7, 7)
    elif change == "integers":
        state["netfclip.1.running_var"] = torch.ones(512, dtype=torch.int64)
    return state


@pytest.mark.parametrize("change, message", [
    ("missing", "missing key 'netfcaud.3.bias'"),
    ("unexpected", "unexpected key 'netfcaud.4.weight'"),
    ("shape", r"key 'netcnnlip.0.weight' has shape \(96, 3, 7, 7\)"),
    ("integers", "holds torch.int64, not floats"),
])
def test_refuses_a_file_of_another_model(tmp_path, change, message):
    path = syncnet_weights.write(tmp_path / FILENAME, _edited(change))
    with pytest.raises(WeightsError, match=message) as exc:
        load_syncnet(path)
    assert str(path) in str(exc.value) and "pcavs download syncnet" in str(exc.value) and "\n" not in str(exc.value)


class _Module(torch.nn.Module):
    pass


@pytest.mark.parametrize("kind, message", [
    ("truncated", "truncated or not a PyTorch checkpoint"),
    ("text", "truncated or not a PyTorch checkpoint"),
    ("module", "refuses"),
])
def test_refuses_broken_and_unsafe_files(tmp_path, syncnet_file, kind, message):
    path = tmp_path / FILENAME
    if kind == "truncated":
        path.write_bytes(syncnet_file.read_bytes()[: 1 << 20])
    elif kind == "text":
        path.write_text("<html>not found</html>")
    else:
        torch.save(_Module(), path)  # a pickled object: weights_only=True refuses it
    with pytest.raises(WeightsError, match=message):
        load_syncnet(path)


@pytest.mark.no_weights_env
def test_where_the_weights_are_found(tmp_path, monkeypatch, syncnet_file):
    monkeypatch.delenv("PCAVS_SYNCNET", raising=False)
    with pytest.raises(WeightsError, match=r"no SyncNet weights found .*pcavs download syncnet"):
        find("syncnet")
    cached = tmp_path / "pcavs-home" / FILENAME  # $PCAVS_HOME is tmp_path / pcavs-home in every test
    cached.parent.mkdir(parents=True)
    cached.write_bytes(syncnet_file.read_bytes())
    assert find("syncnet") == cached
    monkeypatch.setenv("PCAVS_SYNCNET", str(syncnet_file))
    assert find("syncnet") == syncnet_file
    assert find("syncnet", syncnet_file.parent) == syncnet_file  # a folder: the file in it
    with pytest.raises(WeightsError, match=r"given\.model: no such file or folder; run `pcavs download syncnet`"):
        find("syncnet", tmp_path / "given.model")


@pytest.mark.no_weights_env
def test_a_missing_file_in_the_environment_is_an_error_naming_it(tmp_path, monkeypatch, syncnet_file):
    """$PCAVS_SYNCNET naming no file: one line naming the variable, the file and what to do; never another file,
    never a download."""
    cached = tmp_path / "pcavs-home" / FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(syncnet_file.read_bytes())
    absent = tmp_path / "absent.model"
    monkeypatch.setenv("PCAVS_SYNCNET", str(absent))
    for call in (lambda: find("syncnet"), lambda: ensure("syncnet", progress=False)):
        with pytest.raises(WeightsError) as exc:
            call()
        text = str(exc.value)
        assert "\n" not in text and text == (
            f"{absent} ($PCAVS_SYNCNET): no such file or folder; run `pcavs download syncnet` "
            "(or `pcavs download syncnet --from-file syncnet_v2.model`), or unset $PCAVS_SYNCNET")


# ---------------------------------------------------------------- network, windows, scores


def test_batching_does_not_change_the_embeddings(net, compact, scored):
    run = scored("sync")
    frames, samples = run.frames[0:14], run.samples[: 14 * 640]
    lip, aud = lipsync.embed(net, frames, samples, batch_size=3)
    assert lip.shape == (9, 1024)
    assert max_diff(lip, run.lip[:9]) < 1e-4 and max_diff(aud, run.aud[:9]) < 1e-4


def test_out_of_memory_splits_the_batch_down_to_one_window(net, scored, monkeypatch):
    """An injected device out-of-memory error for batches over 2 windows: the batch is halved (9 -> 4 -> 2), the
    size that fit is kept for the rest of the video, and the embeddings are those of the unsplit run."""
    run = scored("sync")
    frames, samples = run.frames[0:14], run.samples[: 14 * 640]
    tried = []
    lip_tower = net.lip

    def small_device(video):
        tried.append(len(video))
        if len(video) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return lip_tower(video)

    monkeypatch.setattr(net, "lip", small_device)
    lip, aud = lipsync.embed(net, frames, samples)
    assert tried == [9, 4, 2, 2, 2, 2, 1]  # 9 windows; after 4 failed, batches of 2 to the end
    assert max_diff(lip, run.lip[:9]) < 1e-4 and max_diff(aud, run.aud[:9]) < 1e-4

    monkeypatch.setattr(net, "lip", lambda video: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory")))
    with pytest.raises(OutOfMemoryError, match=r"out of memory even for one window \(SyncNet\)") as error:
        lipsync.embed(net, frames, samples)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("delay", [3, -2, 0])
def test_offset_sign_negative_when_the_audio_is_late(delay):
    """Audio `delay` frames late (video window i matches audio window i + delay) gives offset -delay."""
    rng = np.random.default_rng(5)
    content = torch.from_numpy(rng.normal(size=(60, 1024)).astype(np.float32)) + 3
    lip = content[10:50]
    aud = content[10 - delay : 50 - delay]
    scores = lipsync.score(lip, aud)
    assert scores.offset == -delay
    assert scores.offsets[np.argmin(scores.mdist)] == -delay and scores.conf > 10


def test_windows_and_short_inputs(net):
    assert lipsync.num_windows(160, 102220) == 154  # min(160, 159) - 5: the last full window is not scored
    with pytest.raises(InputError, match="too short to score"):
        lipsync.embed(net, np.zeros((5, 224, 224, 3), np.uint8), np.zeros(16000, np.int16))


def test_median_filter_is_scipys():
    signal = pytest.importorskip("scipy.signal")
    values = np.random.default_rng(1).normal(size=50).astype(np.float32)
    assert np.array_equal(lipsync.medfilt(values, 9), signal.medfilt(values, 9))


def test_mfcc_rules_on_silence_and_short_signals():
    silent = mfcc(np.zeros(1200, np.int16))
    assert silent.shape == (13, 6)  # 1 + ceil((1200 - 400) / 160)
    assert np.allclose(silent[0], np.log(np.finfo(np.float64).eps)) and np.abs(silent[1:]).max() < 1e-9
    assert mfcc(np.ones(100, np.int16)).shape == (13, 1)


# ---------------------------------------------------------------- download


@pytest.fixture(scope="module")
def server(tmp_path_factory, syncnet_file):
    """Serves the synthesized weights and wrong files on 127.0.0.1; stops by itself. Yields (base URL, hits)."""
    folder = tmp_path_factory.mktemp("served")
    files = {"syncnet_v2.model": syncnet_file.read_bytes(), "wrong.model": b""}
    wrong = folder / "wrong.model"
    syncnet_weights.write(wrong, _edited("missing"))
    files["wrong.model"] = wrong.read_bytes()
    files["truncated.model"] = files["syncnet_v2.model"][: 1 << 20]
    with serve(files) as served:
        yield served


@pytest.fixture(scope="module")
def as_published(syncnet_file) -> Published:
    """The synthesized file described the way PUBLISHED describes the released one."""
    data = syncnet_file.read_bytes()
    return Published(FILENAME, hashlib.sha256(data).hexdigest(), len(data))


def test_the_official_address_is_https_and_the_published_file_is_pinned():
    assert URL.startswith("https://www.robots.ox.ac.uk/")
    assert PUBLISHED == Published(FILENAME, "961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442", 54_573_114)


@pytest.mark.no_weights_env
def test_first_use_downloads_through_the_registry_and_refuses_one_byte_changed(tmp_path, monkeypatch, syncnet_file,
                                                                                  as_published, capsys):
    """SyncNet installs on first use like GFPGAN and PC-AVS (the registry's installer), here with the synthesized file
    as the published one, from a loopback server: the same file with one byte changed is refused, naming both hashes,
    and nothing is installed; the file itself is installed into the user cache, loads, and is then found."""
    monkeypatch.delenv("PCAVS_SYNCNET", raising=False)
    data = bytearray(syncnet_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    changed = hashlib.sha256(data).hexdigest()
    with serve({"good.model": syncnet_file, "changed.model": bytes(data)}) as (base, hits):
        monkeypatch.setitem(registry.MODELS, "syncnet", replace(SYNCNET, url=f"{base}/changed.model", published=as_published))
        with pytest.raises(WeightsError) as exc:
            evaluate.resolve_syncnet(None, torch.device("cpu"))
        assert not (tmp_path / "pcavs-home").exists()
        assert str(exc.value).startswith(
            f"{base}/changed.model: not the published {FILENAME}: SHA-256 {changed} ({len(data):,} bytes), "
            f"expected {as_published.sha256} ({len(data):,} bytes); ")
        monkeypatch.setitem(registry.MODELS, "syncnet", replace(SYNCNET, url=f"{base}/good.model", published=as_published))
        assert isinstance(evaluate.resolve_syncnet(None, torch.device("cpu")), SyncNet)
        installed = tmp_path / "pcavs-home" / FILENAME
        assert hits == ["/changed.model", "/good.model"] and installed.read_bytes() == syncnet_file.read_bytes()
        assert f"downloading {FILENAME} (55 MB) into {installed}" in capsys.readouterr().out
        assert ensure("syncnet") == installed and len(hits) == 2  # found: nothing fetched again
    assert main(["download", "syncnet", "--check"]) == 0
    assert capsys.readouterr().out == f"ok: {installed}: the published {FILENAME} (SHA-256 {as_published.sha256}, " \
                                      f"{as_published.size:,} bytes); loads strictly\n"


@pytest.mark.no_weights_env
def test_cli_refuses_a_file_that_is_not_the_published_one(tmp_path, monkeypatch, server, syncnet_file, capsys):
    """A well-formed SyncNet checkpoint served on loopback that is not syncnet_v2.model: exit status 2, nothing installed."""
    base, _ = server
    monkeypatch.delenv("PCAVS_SYNCNET", raising=False)
    assert main(["download", "syncnet", "--url", f"{base}/syncnet_v2.model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"not the published {FILENAME}" in err and PUBLISHED.sha256 in err
    assert not (tmp_path / "pcavs-home").exists()


@pytest.mark.no_weights_env
def test_cli_installs_a_local_copy_with_no_verify_where_eval_finds_it(tmp_path, monkeypatch, server, syncnet_file, capsys):
    base, hits = server
    monkeypatch.delenv("PCAVS_SYNCNET", raising=False)
    assert main(["download", "syncnet", "--from-file", str(syncnet_file), "--no-verify"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"pcavs: warning: {syncnet_file} is not the published {FILENAME} (SHA-256 ")
    installed = tmp_path / "pcavs-home" / FILENAME
    assert str(installed) in out
    assert installed.read_bytes() == syncnet_file.read_bytes() and find("syncnet") == installed
    assert sorted(p.name for p in installed.parent.iterdir()) == [FILENAME]  # no temporary files left
    count = len(hits)
    assert main(["download", "syncnet", "--url", f"{base}/syncnet_v2.model"]) == 0
    assert len(hits) == count  # installed: nothing fetched again
    assert main(["download", "syncnet", "--check"]) == 2
    assert f"{installed}: not the published {FILENAME}: SHA-256 {hashlib.sha256(installed.read_bytes()).hexdigest()}" \
        in capsys.readouterr().err


@pytest.mark.parametrize("name, error, message", [
    ("wrong.model", WeightsError, "not the published syncnet_v2.model"),
    ("truncated.model", WeightsError, "not the published syncnet_v2.model"),
    ("absent.model", NetworkError, "HTTP 404"),
])
def test_a_bad_download_leaves_nothing(tmp_path, server, name, error, message):
    base, _ = server
    dest = tmp_path / "new" / "models"
    with pytest.raises(error, match=message):
        download_syncnet(dest, url=f"{base}/{name}", progress=False)
    assert not (tmp_path / "new").exists()


def test_from_a_local_copy(tmp_path, syncnet_file, capsys):
    dest = tmp_path / "weights"
    assert main(["download", "syncnet", "--from-file", str(syncnet_file), "--dest", str(dest)]) == 2
    assert "--no-verify" in capsys.readouterr().err and not dest.exists()
    assert main(["download", "syncnet", "--from-file", str(syncnet_file), "--dest", str(dest), "--no-verify"]) == 0
    assert (dest / FILENAME).read_bytes() == syncnet_file.read_bytes()
    wrong = syncnet_weights.write(tmp_path / "wrong.model", _edited("missing"))
    with pytest.warns(UserWarning, match="not the published"), pytest.raises(WeightsError, match="missing key 'netfcaud.3.bias'"):
        download_syncnet(tmp_path / "other", from_file=wrong, verify=False, progress=False)
    assert not (tmp_path / "other").exists()
    assert main(["download", "syncnet", "--from-zip", "demo.zip"]) == 2
    assert "--from-file syncnet_v2.model" in capsys.readouterr().err


def test_eval_towers_fold_batchnorm_and_match_the_modules(net):
    """At eval the towers run as 2-d convolutions with BatchNorm folded in (channels-last): the same embeddings as
    the released layer-by-layer modules to 1e-5, and a weight changed in place is seen at once."""
    torch.manual_seed(0)
    frames, cepstra = torch.rand(2, 3, 5, 224, 224) * 255, torch.randn(2, 1, 13, 20) * 10
    with torch.inference_mode():
        plain_lip = net.netfclip(net.netcnnlip(frames).flatten(1))
        plain_aud = net.netfcaud(net.netcnnaud(cepstra).flatten(1))
        assert max_diff(net.lip(frames), plain_lip) <= 1e-5
        assert max_diff(net.audio(cepstra), plain_aud) <= 1e-5
        net.netcnnaud[1].running_mean.add_(1.0)
        try:
            assert max_diff(net.audio(cepstra), net.netfcaud(net.netcnnaud(cepstra).flatten(1))) <= 1e-5
        finally:
            net.netcnnaud[1].running_mean.sub_(1.0)
