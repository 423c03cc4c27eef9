"""One definition of the job options: validation, misspellings, text parsing and the CLI flags built from it."""
from __future__ import annotations

import argparse

import pytest

import pcavs
from pcavs.core import options
from pcavs.core.assets import DEMO_AUDIO, DEMO_FACE
from pcavs.core.errors import InputError


def test_defaults_and_choices():
    default = pcavs.Options()
    assert (default.mode, default.noise, default.pose_loop, default.progress) == ("full", "fixed", "pingpong", True)
    with pytest.raises(InputError, match=r"^mode: 'wide' is not one of full, crop, grid$"):
        options.job_options(mode="wide")
    with pytest.raises(InputError, match="batch_size: 0 must be a positive integer"):
        options.job_options(batch_size=0)
    with pytest.raises(InputError, match="seed: '7' must be a whole number"):
        options.job_options(seed="7")


@pytest.mark.parametrize("given, closest", [("moed", "mode"), ("pose_lop", "pose_loop"), ("devise", "device"), ("seeds", "seed")])
def test_misspelled_option_names_the_closest(given, closest):
    with pytest.raises(InputError, match=rf"^unknown option '{given}'; did you mean '{closest}'\?$"):
        options.job_options(**{given: "x"})


def test_misspelling_fails_before_any_model_loads(monkeypatch):
    from pcavs.generation import pipeline

    monkeypatch.setattr(pipeline.Pipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model"))
    pipeline._CACHE.clear()
    with pytest.raises(InputError, match="did you mean 'mode'"):
        pcavs.generate(face=DEMO_FACE, audio=DEMO_AUDIO, moed="crop")


def test_from_strings_parses_csv_text():
    parsed = pcavs.Options.from_strings({"mode": "crop", "seed": " 3 ", "aligned": "yes", "batch_size": "", "noise": None})
    assert parsed == pcavs.Options(mode="crop", seed=3, aligned=True)
    with pytest.raises(InputError, match="aligned: 'maybe' is not yes or no"):
        pcavs.Options.from_strings({"aligned": "maybe"})
    with pytest.raises(InputError, match="did you mean 'pose_loop'"):
        pcavs.Options.from_strings({"poseloop": "loop"})


def test_cli_flags_come_from_the_definition():
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    args = parser.parse_args(["--mode", "grid", "--pose-loop", "hold", "--seed", "5", "--quiet"])
    assert options.from_arguments(args) == pcavs.Options(mode="grid", pose_loop="hold", seed=5, progress=False)
    assert options.from_arguments(parser.parse_args([])) == pcavs.Options()
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "wide"])  # argparse refuses values outside the same choices
