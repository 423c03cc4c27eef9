"""Installing the weights: a loopback HTTP server, hand-downloaded zips, a stand-in for gdown, every broken
archive or failed download leaving nothing behind, files checked against their published SHA-256 and size
as they stream, and the install-time record that catches a file changed later. Never touches the network."""
from __future__ import annotations

import hashlib
import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pcavs.models import download, registry
from pcavs.app.cli import main
from pcavs.core.errors import InputError, NetworkError, WeightsError
from support.loopback import serve
from pcavs.models.registry import Published, Weights
from pcavs.models import weights as weights_module
from pcavs.models.weights import RECORD, find_checkpoints, load_networks
from support.pcavs_weights import synth_state_dict

NETS = ("G", "V", "E", "A_sync")
WEIGHT_FILES = sorted(f"latest_net_{n}.pth" for n in NETS)
INSTALLED = sorted([*WEIGHT_FILES, RECORD])
BY_HAND = "pcavs download --from-zip demo.zip"


def write_zip(path: Path, entries: dict[str, Path | bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for arcname, source in entries.items():
            if isinstance(source, bytes):
                zf.writestr(arcname, source)
            else:
                zf.write(source, arcname)
    return path


@pytest.fixture(scope="module")
def zips(tmp_path_factory, synth_weights) -> dict[str, Path]:
    """Good and broken demo.zip variants, built once for the module (ZIP_STORED: fast to write and read)."""
    folder = tmp_path_factory.mktemp("zips")
    real = {n: synth_weights / f"latest_net_{n}.pth" for n in NETS}
    dummy = {f"demo/latest_net_{n}.pth": b"x" for n in NETS}
    made = {}
    made["good"] = write_zip(folder / "demo.zip", {**{f"demo/latest_net_{n}.pth": p for n, p in real.items()},
                                                   "demo/latest_net_D.pth": b"discriminator: not used"})
    made["root"] = write_zip(folder / "root.zip", {f"latest_net_{n}.pth": p for n, p in real.items()})

    state = synth_state_dict("A_sync")
    state["fc.renamed"] = state.pop("fc.weight")
    torch.save(state, folder / "wrong_A_sync.pth")
    made["wrong_key"] = write_zip(folder / "wrong_key.zip", {**{f"demo/latest_net_{n}.pth": p for n, p in real.items()},
                                                             "demo/latest_net_A_sync.pth": folder / "wrong_A_sync.pth"})
    made["truncated"] = folder / "truncated.zip"
    with open(made["good"], "rb") as src:
        made["truncated"].write_bytes(src.read(5 << 20))
    made["evil"] = write_zip(folder / "evil.zip", {**dummy, "../evil.pth": b"x"})
    made["missing"] = write_zip(folder / "missing.zip", {"demo/latest_net_G.pth": b"x"})
    made["twice"] = write_zip(folder / "twice.zip", {**dummy, "old/latest_net_G.pth": b"x"})
    made["bomb"] = write_zip(folder / "bomb.zip", {**dummy, "demo/latest_net_G.pth": bytes(64 << 20)}, zipfile.ZIP_DEFLATED)
    link = zipfile.ZipInfo("demo/latest_net_G.pth")
    link.create_system, link.external_attr = 3, 0o120777 << 16
    with zipfile.ZipFile(folder / "link.zip", "w") as zf:
        for name, data in dummy.items():
            if name != link.filename:
                zf.writestr(name, data)
        zf.writestr(link, "/etc/passwd")
    made["link"] = folder / "link.zip"
    return made


@pytest.fixture(scope="module")
def server(zips):
    """Serves the zips on 127.0.0.1; `short.zip` promises more bytes than it sends. Yields (base URL, requested paths)."""
    with serve({**{p.name: p for p in zips.values()}, "short.zip": bytes(1 << 20)}, cut=["short.zip"]) as served:
        yield served


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_url_installs_then_second_call_does_nothing(tmp_path, server, synth_weights):
    base, hits = server
    dest = tmp_path / "ckpt" / "demo"
    assert download.download_weights(dest, url=f"{base}/demo.zip", progress=False) == dest
    assert leftovers(dest) == INSTALLED  # latest_net_D.pth is skipped; SHA256SUMS records the others
    assert leftovers(dest.parent) == ["demo"]  # no temporary files
    assert (dest / RECORD).read_text() == "".join(f"{sha256(synth_weights / name)}  {name}\n" for name in WEIGHT_FILES)
    load_networks(dest)
    count = len(hits)
    before = {name: os.stat(dest / name) for name in INSTALLED}
    assert download.download_weights(dest, url=f"{base}/demo.zip") == dest
    assert len(hits) == count  # found: nothing fetched again
    after = {name: os.stat(dest / name) for name in INSTALLED}
    assert all((before[n].st_ino, before[n].st_mtime_ns) == (after[n].st_ino, after[n].st_mtime_ns) for n in INSTALLED)


@pytest.mark.no_weights_env
def test_cli_from_zip_into_the_user_cache(tmp_path, zips, monkeypatch, capsys):
    """The default destination is the user cache ($PCAVS_HOME/demo), found from any folder afterwards."""
    home = tmp_path / "home"
    monkeypatch.setenv("PCAVS_HOME", str(home))
    monkeypatch.delenv("PCAVS_CHECKPOINTS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["download", "--from-zip", str(zips["root"])]) == 0  # the files at the zip root
    assert str(home / "demo") in capsys.readouterr().out
    assert leftovers(home / "demo") == INSTALLED
    assert leftovers(home) == ["demo"]
    assert not (tmp_path / "checkpoints").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert find_checkpoints() == home / "demo"
    assert main(["download", "--check"]) == 0  # the weights pcavs would load: the user cache
    assert capsys.readouterr().out.startswith(f"ok: {home / 'demo'}: every file has the SHA-256 recorded in {RECORD}")


@pytest.mark.no_weights_env
def test_a_file_changed_after_the_install_is_caught_on_load_and_by_check(tmp_path, zips, synth_weights, capsys):
    """demo.zip has no published hash: the SHA-256 recorded at install time catches a cache corrupted later."""
    dest = tmp_path / "demo"
    download.download_weights(dest, zip_path=zips["good"], progress=False)
    changed = dest / "latest_net_A_sync.pth"
    data = bytearray(changed.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, inside a tensor: the file still loads
    changed.write_bytes(bytes(data))
    was, now = sha256(synth_weights / changed.name), hashlib.sha256(data).hexdigest()
    with pytest.raises(WeightsError, match=rf"latest_net_A_sync\.pth: SHA-256 {now} is not {was}, recorded in {RECORD}") as exc:
        load_networks(dest)
    assert f"delete {dest} and run `pcavs download` again" in one_line(exc)
    assert main(["download", "--check", "--dest", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and now in err and was in err
    (dest / RECORD).unlink()  # weights placed by hand: keys and shapes are all there is to check
    assert main(["download", "--check", "--dest", str(dest)]) == 0
    assert f"it has no {RECORD}" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("truncated", r"truncated\.zip: truncated or not a zip file"),
    ("evil", r"refusing the zip: it holds the unsafe path '\.\./evil\.pth'"),
    ("link", r"refusing the zip: it holds the link 'demo/latest_net_G\.pth'"),
    ("bomb", r"latest_net_G\.pth would unpack to 64 MiB from 0 MiB; refusing what looks like a zip bomb"),
    ("missing", r"latest_net_A_sync\.pth is not in the zip"),
    ("twice", r"holds latest_net_G\.pth more than once"),
    ("wrong_key", r"wrong_key\.zip \(latest_net_A_sync\.pth\): missing key 'fc\.weight'"),
])
def test_broken_archive_leaves_nothing(tmp_path, server, zips, case, message):
    base, _ = server
    dest = tmp_path / "new" / "demo"
    with pytest.raises(WeightsError, match=message) as exc:
        download.download_weights(dest, url=f"{base}/{zips[case].name}", progress=False)
    one_line(exc)
    assert leftovers(tmp_path) == []  # not even the parent folder it created


@pytest.mark.parametrize("where, reason", [
    ("absent.zip", "HTTP 404 Not Found"),
    ("short.zip", "the connection closed after 1048576 of 2097152 bytes"),
    ("unreachable", "refused"),
])
def test_failed_download_names_the_manual_route(tmp_path, server, where, reason):
    base, _ = server
    url = f"http://127.0.0.1:{closed_port()}/demo.zip" if where == "unreachable" else f"{base}/{where}"
    with pytest.raises(NetworkError, match="downloading the weights from .* failed") as exc:
        download.download_weights(tmp_path / "demo", url=url)  # with the progress bar
    text = one_line(exc)
    assert reason in text and registry.DRIVE_LINK in text and BY_HAND in text
    assert leftovers(tmp_path) == []


def test_silent_server_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "TIMEOUT_S", 0.5)
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        with pytest.raises(NetworkError, match=r"failed \(timed out\)") as exc:  # without a timeout it would wait forever
            download.download_weights(tmp_path / "demo", url=f"http://127.0.0.1:{silent.getsockname()[1]}/demo.zip")
    assert BY_HAND in one_line(exc)
    assert leftovers(tmp_path) == []


def test_cli_reports_a_failed_download_in_one_line(tmp_path, capsys):
    assert main(["download", "--dest", str(tmp_path / "demo"), "--url", f"http://127.0.0.1:{closed_port()}/demo.zip"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pcavs: downloading the weights") and err.count("\n") == 1 and BY_HAND in err
    assert leftovers(tmp_path) == []


def test_incomplete_install_is_swapped_out_and_restored_on_interrupt(tmp_path, zips, monkeypatch):
    dest = tmp_path / "demo"
    dest.mkdir()
    (dest / "latest_net_G.pth").write_bytes(b"half a file")
    real_replace = os.replace

    def interrupted(src, dst):
        if Path(src).name == "staged":
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(download.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download.download_weights(dest, zip_path=zips["good"], progress=False)
    assert leftovers(tmp_path) == ["demo"] and leftovers(dest) == ["latest_net_G.pth"]
    assert (dest / "latest_net_G.pth").read_bytes() == b"half a file"

    monkeypatch.setattr(download.os, "replace", real_replace)
    download.download_weights(dest, zip_path=zips["good"], progress=False)
    assert leftovers(tmp_path) == ["demo"] and leftovers(dest) == INSTALLED
    assert (dest / "latest_net_G.pth").stat().st_size > 1000


def test_interrupt_while_verifying_leaves_nothing(tmp_path, zips, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(weights_module, "load_checkpoint_file", interrupt)  # the loader the registry names
    with pytest.raises(KeyboardInterrupt):
        download.download_weights(tmp_path / "a" / "b" / "demo", zip_path=zips["good"], progress=False)
    assert leftovers(tmp_path) == []


def test_size_cap(tmp_path, zips, monkeypatch):
    monkeypatch.setattr(download, "MAX_TOTAL_BYTES", 400 << 20)
    with pytest.raises(WeightsError, match=r"would unpack to \d+ MiB \(limit 400 MiB\)"):
        download.download_weights(tmp_path / "demo", zip_path=zips["good"], progress=False)
    assert leftovers(tmp_path) == []


def test_refuses_a_dest_with_other_files_before_downloading(tmp_path, server):
    base, hits = server
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    count = len(hits)
    with pytest.raises(WeightsError, match=r"mine: holds files other than the weights \(notes\.txt\)"):
        download.download_weights(dest, url=f"{base}/demo.zip")
    assert len(hits) == count and leftovers(dest) == ["notes.txt"] and leftovers(tmp_path) == ["mine"]


def test_bad_arguments(tmp_path, zips):
    with pytest.raises(InputError, match="not both"):
        download.download_weights(tmp_path / "demo", url="http://127.0.0.1:1/demo.zip", zip_path=zips["good"])
    with pytest.raises(InputError, match="not an http:// or https:// address"):
        download.download_weights(tmp_path / "demo", url=f"file://{zips['good']}")
    with pytest.raises(WeightsError, match=r"nowhere\.zip: no such file; download https://drive\.google\.com/file/d/"):
        download.download_weights(tmp_path / "demo", zip_path=tmp_path / "nowhere.zip")
    assert leftovers(tmp_path) == []


def test_google_drive_route_calls_gdown_with_the_id(tmp_path, monkeypatch, zips):
    import gdown

    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        Path(kwargs["output"]).write_bytes(zips["good"].read_bytes())
        return kwargs["output"]

    monkeypatch.setattr(gdown, "download", fake_download)
    dest = download.download_weights(tmp_path / "demo", progress=False)
    assert len(calls) == 1 and calls[0]["id"] == "1Zehr3JLIpzdg2S5zZrhIbpYPKF-4gKU_" and "url" not in calls[0]
    assert calls[0]["quiet"] is True  # progress=False
    assert Path(calls[0]["output"]).parent.parent == tmp_path  # downloaded beside the destination
    assert leftovers(dest) == INSTALLED and leftovers(tmp_path) == ["demo"]


@pytest.mark.parametrize("behaviour, message", [
    ("raises", "FileURLRetrievalError: Too many users have viewed or downloaded this file recently"),
    ("html", "Google Drive sent a web page instead of demo.zip"),
    ("nothing", "Google Drive sent no file"),
])
def test_google_drive_failures(tmp_path, monkeypatch, behaviour, message):
    import gdown
    from gdown.exceptions import FileURLRetrievalError

    def fake_download(**kwargs):
        if behaviour == "raises":
            raise FileURLRetrievalError("Too many users have viewed or downloaded this file recently.\n\nYou may still...")
        if behaviour == "html":
            Path(kwargs["output"]).write_text("<html>Google Drive - Quota exceeded</html>")
            return kwargs["output"]
        return None

    monkeypatch.setattr(gdown, "download", fake_download)
    with pytest.raises(NetworkError, match=message) as exc:
        download.download_weights(tmp_path / "demo", progress=False)
    text = one_line(exc)
    assert registry.DRIVE_LINK in text and BY_HAND in text
    assert leftovers(tmp_path) == []


def test_truncated_file_in_dest_is_not_complete(tmp_path, synth_weights):
    dest = tmp_path / "demo"
    dest.mkdir()
    for name in WEIGHT_FILES:
        os.link(synth_weights / name, dest / name)  # hard links: no copying, and the originals stay intact below
    assert download.complete(dest, WEIGHT_FILES)
    data = (dest / "latest_net_E.pth").read_bytes()
    (dest / "latest_net_E.pth").unlink()
    (dest / "latest_net_E.pth").write_bytes(data[: len(data) // 2])
    assert not download.complete(dest, WEIGHT_FILES)


# ---------------------------------------------------------------- a single file, through the same installer


@pytest.fixture
def model(monkeypatch):
    """Registers a stand-in single-file model, "model" (a zip "loads"), with no published hash; yields a function
    that registers it again with `changes` (e.g. its URL, its `Published`) and returns the entry."""
    def register(**changes) -> Weights:
        fields = dict(name="model", title="Model", files=("model.bin",), url="https://example.invalid/model.bin",
                      env="PCAVS_TEST_MODEL", cache="models", loader="support.zip_weights:load", size_text="1 MB")
        entry = Weights(**{**fields, **changes})
        monkeypatch.setitem(registry.MODELS, "model", entry)
        return entry

    monkeypatch.delenv("PCAVS_TEST_MODEL", raising=False)
    register()
    return register


def test_a_single_file_downloads_verifies_and_renames(tmp_path, server, model):
    base, hits = server
    dest = tmp_path / "cache" / "models" / "root.bin"
    assert download.install("model", dest, url=f"{base}/root.zip", progress=False) == dest
    assert zipfile.is_zipfile(dest) and leftovers(dest.parent) == ["root.bin"]
    count = len(hits)
    assert download.install("model", dest, url=f"{base}/root.zip") == dest  # installed: nothing fetched
    assert len(hits) == count


def test_a_single_file_from_a_local_copy_into_a_folder(tmp_path, zips, model):
    dest = tmp_path / "models"
    assert download.install("model", dest, from_file=zips["root"]) == dest / "model.bin"
    assert (dest / "model.bin").read_bytes() == zips["root"].read_bytes()


@pytest.mark.parametrize("case, error, message", [
    ("refused", WeightsError, "not the expected file"),
    ("short", NetworkError, r"closed after 1048576 of 2097152 bytes\); check the connection, or download "
                            r"https://example\.invalid/model\.bin by hand and run `pcavs download model --from-file model\.bin`"),
    ("404", NetworkError, "HTTP 404"),
])
def test_single_file_failures_leave_nothing(tmp_path, server, model, case, error, message):
    base, _ = server
    name = {"refused": "truncated.zip", "short": "short.zip", "404": "absent.zip"}[case]
    with pytest.raises(error, match=message) as exc:
        download.install("model", tmp_path / "new" / "folder", url=f"{base}/{name}", progress=False)
    one_line(exc)
    assert not (tmp_path / "new").exists()  # the folders it made are gone, and no partial file is anywhere


# ---------------------------------------------------------------- files with a published SHA-256 and size


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Published, bytes]:
    """A file standing in for a released one (a small zip), described as its publisher would: name, SHA-256, size."""
    path = write_zip(tmp_path_factory.mktemp("published") / "model.zip", {"weights.bin": np.random.default_rng(0).bytes(1 << 20)})
    data = path.read_bytes()
    return Published("model.bin", hashlib.sha256(data).hexdigest(), len(data)), data


@pytest.fixture(scope="module")
def mirror(published):
    """Serves the published file and altered copies; the `unsized-*` ones without a Content-Length."""
    _, data = published
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0x01  # one byte inside a stored entry: still a readable zip, only the hash tells
    files = {"model.bin": data, "changed.bin": bytes(changed), "longer.bin": data + b"x",
             "unsized-changed.bin": bytes(changed), "unsized-longer.bin": data + b"x"}
    with serve(files, unsized=["unsized-changed.bin", "unsized-longer.bin"]) as served:
        yield served


def test_the_published_file_is_installed_then_checked(tmp_path, mirror, published, model, monkeypatch):
    base, _ = mirror
    spec, data = published
    model(published=spec, url=f"{base}/model.bin")
    dest = tmp_path / "models" / "model.bin"
    assert download.install("model", dest, progress=False) == dest
    assert dest.read_bytes() == data and leftovers(dest.parent) == ["model.bin"]
    monkeypatch.setenv("PCAVS_TEST_MODEL", str(dest.parent))  # a folder: the file in it
    assert download.check("model") == f"{dest}: the published model.bin (SHA-256 {spec.sha256}, {spec.size:,} bytes); loads strictly"


@pytest.mark.parametrize("name, words", [
    ("changed.bin", "SHA-256 {got} ({size:,} bytes), expected {sha} ({size:,} bytes)"),  # one byte changed
    ("unsized-changed.bin", "SHA-256 {got} ({size:,} bytes), expected {sha} ({size:,} bytes)"),
    ("longer.bin", "the server offers {more:,} bytes, expected {size:,} (SHA-256 {sha})"),  # refused before the body
    ("unsized-longer.bin", "longer than its {size:,} bytes (SHA-256 {sha})"),  # refused as soon as it is longer
])
def test_a_file_that_is_not_the_published_one_is_refused_and_nothing_is_installed(tmp_path, mirror, published, model, name, words):
    base, _ = mirror
    spec, data = published
    model(published=spec)
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0x01
    expected = words.format(got=hashlib.sha256(changed).hexdigest(), sha=spec.sha256, size=spec.size, more=spec.size + 1)
    dest = tmp_path / "new" / "models" / "model.bin"
    with pytest.raises(WeightsError, match="not the published model.bin") as exc:
        download.install("model", dest, url=f"{base}/{name}", progress=False)
    text = one_line(exc)
    assert text.startswith(f"{base}/{name}: ") and expected in text, text
    assert "check the address, or download" in text
    assert not (tmp_path / "new").exists()  # nothing installed, no partial file, not even the folders


def test_a_local_copy_that_is_not_the_published_file_needs_verify_false(tmp_path, published, model):
    spec, _ = published
    model(published=spec)
    other = write_zip(tmp_path / "mine.zip", {"weights.bin": b"my own weights"})  # a good zip, but not the published file
    dest = tmp_path / "models" / "model.bin"
    with pytest.raises(WeightsError, match=rf"{other}: not the published model\.bin: SHA-256 {sha256(other)} .* "
                                           rf"expected {spec.sha256}") as exc:
        download.install("model", dest, from_file=other)
    assert "--no-verify" in one_line(exc) and not dest.exists()
    with pytest.warns(UserWarning, match=rf"{other} is not the published model\.bin \(SHA-256 {sha256(other)}.*"
                                         rf"expected {spec.sha256}.*installing it anyway \(--no-verify\)"):
        download.install("model", dest, from_file=other, verify=False)
    assert dest.read_bytes() == other.read_bytes()
    with pytest.raises(WeightsError, match=rf"{dest}: not the published model\.bin: SHA-256 {sha256(other)}"):
        download.check("model", dest)


def test_verify_false_is_only_for_a_local_copy(tmp_path, mirror, published, model):
    base, hits = mirror
    model(published=published[0])
    count = len(hits)
    with pytest.raises(InputError, match=r"only for a file you have \(--from-file\)"):
        download.install("model", tmp_path / "model.bin", url=f"{base}/changed.bin", verify=False)
    assert len(hits) == count and leftovers(tmp_path) == []


@pytest.mark.no_weights_env
@pytest.mark.parametrize("name", ["pcavs", "gfpgan", "syncnet"])
def test_every_model_is_found_through_the_registry(tmp_path, monkeypatch, name):
    """One finder for all: $<env> naming nothing is an error naming it and the file; the default places are passed over."""
    weights = registry.MODELS[name]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(weights.env, raising=False)
    with pytest.raises(WeightsError, match=rf"no {weights.title} weights found \(looked in .*pcavs-home.*\); run `{weights.command}`"):
        registry.find(name)
    monkeypatch.setenv(weights.env, str(tmp_path / "absent"))
    with pytest.raises(WeightsError) as exc:
        registry.find(name)
    assert one_line(exc) == (f"{tmp_path / 'absent'} (${weights.env}): no such file or folder; {weights.hint}, "
                             f"or unset ${weights.env}")
    (tmp_path / "folder").mkdir()
    monkeypatch.setenv(weights.env, str(tmp_path / "folder"))
    with pytest.raises(WeightsError, match=rf"folder/{weights.files[0]} \(\${weights.env}\): file not found; "):
        registry.find(name)
    for file in weights.files:
        (tmp_path / "folder" / file).write_bytes(b"x")
    assert registry.find(name) == (tmp_path / "folder" / ("" if weights.archive else weights.files[0]))


@pytest.mark.parametrize("model", ["pcavs", "gfpgan", "syncnet"])
@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/model.bin", "127.0.0.1/model.bin"])
def test_url_must_be_http_or_https_for_every_model(tmp_path, capsys, model, url):
    assert main(["download", model, "--url", url, "--dest", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert "not an http:// or https:// address" in err and err.count("\n") == 1
    assert leftovers(tmp_path) == []


def test_no_verify_and_check_take_no_download_source(tmp_path, capsys):
    assert main(["download", "gfpgan", "--no-verify", "--dest", str(tmp_path)]) == 2
    assert "--no-verify is only for --from-file" in capsys.readouterr().err
    assert main(["download", "--check", "--url", "https://example.invalid/demo.zip"]) == 2
    assert "--check installs nothing" in capsys.readouterr().err
    assert leftovers(tmp_path) == []
