"""Weights download: a loopback server, hand-downloaded zips, and every broken archive leaving nothing behind."""
from __future__ import annotations

import http.server
import socket
import threading
import zipfile
from collections import OrderedDict

import pytest
import torch

from pcavs import download
from pcavs.cli import main
from pcavs.errors import WeightsError
from pcavs.weights import load_networks

NETS = ("G", "V", "E", "A_sync")


@pytest.fixture(scope="module")
def zips(tmp_path_factory, synth_weights, make_weights):
    folder = tmp_path_factory.mktemp("zips")

    def build(name: str, entries: dict[str, object]) -> object:
        path = folder / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for arcname, source in entries.items():
                if isinstance(source, bytes):
                    zf.writestr(arcname, source)
                else:
                    zf.write(source, arcname)
        return path

    good = {f"demo/latest_net_{n}.pth": synth_weights / f"latest_net_{n}.pth" for n in NETS}
    state = OrderedDict(make_weights.synth_state_dict("A_sync"))
    state["model.renamed.weight"] = state.pop("model.fc.weight")
    wrong = folder / "latest_net_A_sync.pth"
    torch.save(state, wrong)
    data = build("demo.zip", {**good, "demo/latest_net_D.pth": b"unused by inference"})
    return {
        "good": data,
        "truncated": build("truncated.zip", {"x": b""}).write_bytes(data.read_bytes()[: 50_000_000]) and folder / "truncated.zip",
        "evil": build("evil.zip", {**good, "../evil.pth": b"x"}),
        "wrong_key": build("wrong.zip", {**good, "demo/latest_net_A_sync.pth": wrong}),
    }


@pytest.fixture(scope="module")
def server(zips):
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            name = self.path.lstrip("/")
            if name not in {p.name for p in zips.values()}:
                self.send_error(404)
                return
            body = (zips["good"].parent / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir())


def test_cli_download_from_url_then_nothing_to_do(tmp_path, server, capsys):
    base, hits = server
    dest = tmp_path / "ckpt" / "demo"
    assert main(["download", "--dest", str(dest), "--url", f"{base}/demo.zip"]) == 0
    assert sorted(p.name for p in dest.iterdir()) == [f"latest_net_{n}.pth" for n in sorted(NETS)]
    load_networks(dest)
    count = len(hits)
    assert download.download_weights(dest, url=f"{base}/demo.zip") == dest
    assert len(hits) == count  # found, not fetched again
    assert leftovers(dest.parent) == ["demo"]


def test_from_zip(tmp_path, zips):
    dest = tmp_path / "demo"
    assert main(["download", "--dest", str(dest), "--from-zip", str(zips["good"])]) == 0
    assert (dest / "latest_net_G.pth").is_file() and not (dest / "latest_net_D.pth").exists()


@pytest.mark.parametrize("case, message", [("truncated", "truncated or not a zip"), ("evil", "unsafe path"),
                                           ("wrong_key", r"wrong.zip \(latest_net_A_sync.pth\): missing key 'model.fc.weight'")])
def test_broken_archives_leave_nothing(tmp_path, server, zips, case, message):
    base, _ = server
    dest = tmp_path / "demo"
    with pytest.raises(WeightsError, match=message):
        download.download_weights(dest, url=f"{base}/{zips[case].name}")
    assert leftovers(tmp_path) == []


def test_http_errors_and_unreachable(tmp_path, server, capsys):
    base, _ = server
    with pytest.raises(WeightsError, match="404") as exc:
        download.download_weights(tmp_path / "demo", url=f"{base}/missing.zip")
    assert "--from-zip" in str(exc.value) and download.DRIVE_LINK in str(exc.value)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert main(["download", "--dest", str(tmp_path / "demo"), "--url", f"http://127.0.0.1:{closed}/demo.zip"]) == 2
    assert "downloading the weights failed" in capsys.readouterr().err
    assert leftovers(tmp_path) == []


def test_google_drive_route_uses_gdown(tmp_path, monkeypatch, zips):
    import gdown

    asked = {}

    def fake_download(id=None, output=None, quiet=False, **kwargs):
        asked["id"] = id
        with open(output, "wb") as out:
            out.write(zips["good"].read_bytes())
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    dest = download.download_weights(tmp_path / "demo", progress=False)
    assert asked["id"] == "1Zehr3JLIpzdg2S5zZrhIbpYPKF-4gKU_" and (dest / "latest_net_E.pth").is_file()
