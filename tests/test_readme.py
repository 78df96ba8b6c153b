"""The README's commands are true: CI runs exactly them, and the main job works as written."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from uvlm.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def block(marker: str) -> list[str]:
    m = re.search(rf"<!-- {marker} -->\s*```\w*\n(.*?)```", README, re.S)
    assert m, f"README has no <!-- {marker} --> code block"
    return [line for line in m.group(1).splitlines() if line.strip()]


def test_readme_has_one_install_one_test_one_main_job_command():
    for marker in ("ci:install", "ci:test", "main-job"):
        assert len(block(marker)) == 1, marker


def test_ci_runs_the_readme_commands():
    out = subprocess.run(["bash", str(ROOT / ".ci/run"), "--print"], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"install: {block('ci:install')[0]}", f"test: {block('ci:test')[0]}"]
    ci = (ROOT / ".ci/run").read_text()
    assert "python3 -m venv" in ci and 'bash -euo pipefail -c "$INSTALL"' in ci and 'bash -euo pipefail -c "$TEST"' in ci


def test_install_command_pins_cpu_torch_but_package_does_not():
    req = (ROOT / "requirements-cpu.txt").read_text()
    assert "torch==2.13.0" in req and "-e ." in req
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"torch>=[\d.]+"', pyproject) and "torch==" not in pyproject


def test_main_job_command_runs(tmp_path, monkeypatch, capsys):
    """Run the README's main job as written (each '&&'-joined command through the real CLI entry point)."""
    monkeypatch.chdir(tmp_path)
    for cmd in block("main-job")[0].split("&&"):
        argv = shlex.split(cmd)
        assert argv[0] == "uvlm"
        assert main(argv[1:]) == 0, cmd
    from PIL import Image

    sheet = Image.open(tmp_path / "preview.png")
    assert sheet.width > 400 and sheet.height > 400
    assert (tmp_path / "smartwatch-demo" / "manifest.json").is_file()
