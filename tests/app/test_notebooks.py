"""The three notebooks run headless, top to bottom, and show a playable video; the Colab notebook's
install cell skips when pcavs is importable and otherwise asks pip for one requirement, unpinned."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from support import syncnet_weights as syncnet_weights
from pcavs.media.probe import probe
from pcavs.metrics.syncnet import default_path

ROOT = Path(__file__).resolve().parents[2]
COLAB = ROOT / "PCAVS_Colab.ipynb"
REPO = "https://github.com/pcavs/pcavs"
# What a current Colab image ships (late 2025): pcavs must install there without replacing any of them.
COLAB_SHIPS = {"python": "3.12", "torch": "2.8.0", "numpy": "2.0.2", "ipywidgets": "7.7.1", "pillow": "11.3.0",
               "opencv-python-headless": "4.12.0.88", "librosa": "0.11.0", "soundfile": "0.13.1", "tqdm": "4.67.1",
               "gdown": "5.2.0", "safetensors": "0.6.2", "imageio-ffmpeg": "0.6.0"}


def outputs_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


def cell_calling(nb, call: str):
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and call in c.source]
    return cell


@pytest.mark.slow
@pytest.mark.parametrize("notebook, video", [
    ("PCAVS_Colab.ipynb", "pcavs_result.mp4"),
    ("notebooks/quickstart.ipynb", "quickstart.mp4"),
    ("notebooks/pose_control.ipynb", "pose_control.mp4"),
])
def test_notebook_runs_and_shows_a_video(tmp_path, notebook, video):
    source = ROOT / notebook
    nb = nbformat.read(source, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "outputs are stripped in git"
    assert all(len(cell.source.splitlines()) <= 15 for cell in nb.cells if cell.cell_type == "code")
    if notebook == "PCAVS_Colab.ipynb":  # tick the lip-sync box; SyncNet (synthesized) is already in the user cache
        score = cell_calling(nb, "SCORE_LIP_SYNC = False")
        score.source = score.source.replace("SCORE_LIP_SYNC = False", "SCORE_LIP_SYNC = True")
        default_path().parent.mkdir(parents=True, exist_ok=True)
        syncnet_weights.write(default_path())
    shutil.copy(source, tmp_path / source.name)
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = [o for o in cell_calling(nb, "show_video(").outputs if "text/html" in o.get("data", {})]
    assert shown and "<video" in shown[0]["data"]["text/html"] and "data:video/mp4;base64," in shown[0]["data"]["text/html"]
    info = probe(tmp_path / video)
    assert info.video_codec == "h264" and info.has_audio and info.duration > 2
    if notebook != "notebooks/pose_control.ipynb":  # the video grew in one picture, updated in place: one small output
        (grew,) = [o for o in cell_calling(nb, "watch(").outputs if "text/html" in o.get("data", {})]
        assert "data:image/jpeg;base64," in grew["data"]["text/html"] and "done: " in grew["data"]["text/html"]
        assert len(json.dumps(grew)) < 200_000
    if notebook == "PCAVS_Colab.ipynb":
        assert "skipping the install" in outputs_text(nb.cells[1])
        widgets = [o for o in cell_calling(nb, "MediaPicker(").outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert widgets, "the upload widgets are shown"
        assert outputs_text(cell_calling(nb, "media.files()")).splitlines()[:3] == [
            "face: demo_face.jpg (demo)", "audio: demo_speech.wav (demo)", "pose: demo_pose.mp4 (demo)"]
        scored = cell_calling(nb, "evaluate_faces(")
        assert "LSE-D" in outputs_text(scored), outputs_text(scored)
        assert any("image/png" in o.get("data", {}) for o in scored.outputs), "the plot is shown"


def install_cell() -> str:
    nb = nbformat.read(COLAB, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert "PCAVS_REPO" in first.source, "the install cell comes first"
    return first.source


def run_install_cell(monkeypatch, pip: str | None = None) -> list[str]:
    """Run the install cell as if pcavs were missing; the pip command it would run."""
    source = install_cell()
    if pip is not None:
        source = re.sub(r"^PCAVS_PIP = .*$", f"PCAVS_PIP = {pip!r}", source, count=1, flags=re.M)
    commands = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pcavs" else real_find_spec(name, *a))
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: commands.append(command))
    exec(compile(source, "install cell", "exec"), {})
    (command,) = commands
    return command


def test_the_install_cell_asks_pip_for_one_unpinned_requirement(monkeypatch):
    command = run_install_cell(monkeypatch)
    assert command[:-1] == [sys.executable, "-m", "pip", "install", "-q", "--upgrade-strategy", "only-if-needed"]
    wanted = Requirement(command[-1])
    assert (wanted.name, wanted.extras, wanted.url, str(wanted.specifier)) == ("pcavs", {"notebook"}, f"git+{REPO}", "")
    text = "".join(cell.source for cell in nbformat.read(COLAB, as_version=4).cells)
    assert text.count("github.com/") == 1, "the repository address is written once"
    badge = re.search(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/", (ROOT / "README.md").read_text())
    assert badge and f"https://github.com/{badge[1]}" == REPO, "the README's Open in Colab badge opens this repository"


def test_the_colab_notebook_is_thin_and_in_order():
    nb = nbformat.read(COLAB, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and len(cell.source.splitlines()) <= 15 for cell in code)
    steps = ["PCAVS_PIP", "gpu_status()", "ensure_weights()", "MediaPicker(", "OptionsForm()", "notebook.watch(",
             "show_video(", "download("]
    assert [next(i for i, cell in enumerate(code) if step in cell.source) for step in steps] == list(range(len(steps)))
    assert any(cell.get("id") == "score-lip-sync" for cell in nb.cells), "the spot for the lip-sync score cell"
    run = next(cell.source for cell in code if "notebook.watch(" in cell.source)
    assert "SCORE_LIP_SYNC = False  #@param" in run and "return_faces=SCORE_LIP_SYNC" in run, \
        "the faces (226 MB for 60 s) are kept only when a score is asked for"


def copy_of_the_project(clone: Path) -> Path:
    """The files pip builds the package from, copied into `clone`."""
    clone.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "pcavs"):
        if (ROOT / name).exists():
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, clone / name)
    return clone


def test_the_install_cell_takes_the_pypi_route(monkeypatch):
    assert run_install_cell(monkeypatch, "pcavs[notebook]")[-1] == "pcavs[notebook]"


def test_the_install_cell_installs_a_local_clone(monkeypatch, tmp_path):
    pytest.importorskip("setuptools")  # pip builds the clone's metadata with it (no network)
    real_run = subprocess.run
    clone = copy_of_the_project(tmp_path / "clone")
    command = run_install_cell(monkeypatch, f"pcavs[notebook] @ {clone.as_uri()}")
    dry_run = command[:-1] + ["--dry-run", "--no-deps", "--no-index", "--no-build-isolation", "--ignore-installed",
                              "--report", "-", command[-1]]
    done = real_run(dry_run, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (installed,) = json.loads(done.stdout)["install"]
    assert installed["metadata"]["name"] == "pcavs" and installed["download_info"]["url"] == clone.as_uri()
    assert 'ipywidgets>=7.6; extra == "notebook"' in installed["metadata"]["requires_dist"]


def test_the_wheel_ships_the_recording_scripts(tmp_path):
    """What pip installs in Colab holds the browser side of the recordings, and the helpers read it from there."""
    pytest.importorskip("setuptools")
    clone = copy_of_the_project(tmp_path / "clone")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "wheel"), str(clone)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("pcavs-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert {"pcavs/app/notebook/record_voice.js", "pcavs/app/notebook/take_photo.js"} <= set(archive.namelist())
        archive.extractall(tmp_path / "installed")
    script = "from pcavs.app import notebook; print(notebook.__file__); print('getUserMedia' in notebook.RECORD_VOICE_JS)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "installed")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "installed/pcavs/app/notebook/__init__.py"), "True"]


def test_the_requirements_accept_what_colab_ships():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert SpecifierSet(project["requires-python"]).contains(COLAB_SHIPS["python"])
    extras = project["optional-dependencies"]
    for line in project["dependencies"] + extras["notebook"] + extras["test"]:
        wanted = Requirement(line)
        if wanted.name in COLAB_SHIPS:
            assert wanted.specifier.contains(COLAB_SHIPS[wanted.name]), f"{line} would replace Colab's {wanted.name}"
