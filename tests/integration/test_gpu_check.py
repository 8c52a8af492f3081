"""scripts/gpu_check.py's stages run on the CPU with the vLLM stand-in: the script a GPU machine
runs is exercised here up to the engine and the device (its shell wrapper is checked for syntax)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
from fakes import fake_vllm

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPTS / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shell_wrapper_parses():
    subprocess.run(["bash", "-n", str(SCRIPTS / "gpu_check.sh")], check=True)


@pytest.mark.slow
def test_gpu_check_stages_pass_on_cpu_with_the_standin(tmp_path, monkeypatch, capsys):
    fake_vllm.install(monkeypatch)
    check = _load()
    check.build(tmp_path)
    check.backend(tmp_path, fake_vllm.LLM)
    check.train(tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert [x for x in lines if x.startswith("FAIL")] == []
    assert sum(x.startswith("PASS") for x in lines) == 11 and all(check.RESULTS)
