"""The house rules: imports run downhill (import-linter's contracts in pyproject.toml), and the package's
face is light (`import pcavs` and `pcavs --help` load no torch)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pcavs

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "numpy", "cv2", "librosa")


def lint_imports(cwd: Path, package_parent: Path) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("lint-imports")
    assert executable.is_file(), "lint-imports (import-linter) is in the test extra"
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(executable), "--no-cache", str(cwd / "pyproject.toml")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_imports_run_downhill():
    done = lint_imports(ROOT, ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout and "4 kept" in done.stdout, done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract can fail: the core importing the command line is reported with its chain."""
    shutil.copytree(ROOT / "pcavs", tmp_path / "pcavs", ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "pcavs" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _upward():\n    from ..app import cli  # noqa: F401\n")
    done = lint_imports(tmp_path, tmp_path)
    assert done.returncode != 0, done.stdout
    assert "pcavs.core.errors -> pcavs.app.cli" in done.stdout, done.stdout
    assert "pcavs runs downhill: front-ends, batches, jobs, stages, models, media, core BROKEN" in done.stdout, done.stdout


def loaded_after(code: str) -> list[str]:
    script = f"{code}\nimport sys\nprint(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_import_pcavs_loads_nothing_heavy():
    assert loaded_after("import pcavs") == []
    assert loaded_after("import pcavs\npcavs.Options\npcavs.InputError\npcavs.__version__") == []
    assert "torch" in loaded_after("import pcavs\npcavs.Pipeline")


def test_help_loads_no_torch():
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "pcavs", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "pcavs generate" in done.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "pcavs" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_every_public_name_resolves():
    for name in pcavs.__all__:
        assert getattr(pcavs, name) is not None, name
    assert set(pcavs.__all__) <= set(dir(pcavs))
    assert pcavs.batch.__module__ == "pcavs.batches.run" and pcavs.generate.__module__ == "pcavs.generation.pipeline"
    with pytest.raises(AttributeError, match="has no attribute 'genrate'"):
        pcavs.genrate  # noqa: B018


def test_version_comes_from_one_place():
    from importlib.metadata import version

    assert version("pcavs") == pcavs.__version__
    done = subprocess.run([sys.executable, "-m", "pcavs", "--version"], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == f"pcavs {pcavs.__version__}"
