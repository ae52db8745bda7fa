"""The README's commands and snippets run as written, in order, in a fresh folder.

Commands are read from the README itself, so the two cannot drift apart. ``tunevl`` and ``torchrun`` run
this checkout's code (``python -m tunevl``, ``python -m torch.distributed.run`` with a free port, so that
parallel test runs do not collide). Left out, with the reason: ``pip install`` (the environment this suite
runs in; ``.ci/run`` does the clean install), the test command itself, ``tunevl push`` and ``HF_TOKEN`` (a Hub
account), COCO evaluation (the data set), and the plain-peft snippet on ``openai/clip-vit-base-patch16`` (a
download). The full quickstart, its ZeRO-2 and ZeRO-3 twins and the LVLM example take about 2.5 minutes on an
idle 2-core machine (quickstart 27 s, ZeRO-2 37 s): marked slow.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.slow

SKIP = {
    "pip install": "the environment (.ci/run installs from scratch)",
    "python -m pytest": "the test command itself",
    "tunevl push": "needs a Hub account",
    "export HF_TOKEN": "needs a Hub account",
    "dataset_coco.json": "needs COCO",
    "--benchmark sugarcrepe": "needs SugarCrepe and COCO val2017",
    "--benchmark countbench": "needs CountBench's images",
    "recipes/clip/lora.yaml": "downloads openai/clip-vit-base-patch16 (GradCache on a real batch size)",
}


def readme_commands() -> list[str]:
    """Every shell command of the README's bash blocks, in order (``&&`` chains split, ``\\`` lines joined)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            if not line or line.startswith("#"):
                continue
            commands += [part.strip() for part in line.split("&&")]
    return commands


def readme_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shell(command: str, cwd: Path) -> None:
    argv = shlex.split(command)
    if argv[0] == "tunevl":
        argv = [sys.executable, "-m", "tunevl", *argv[1:]]
    elif argv[0] == "torchrun":
        argv = [sys.executable, "-m", "torch.distributed.run", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port()), *argv[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr, f"{command}\n{proc.stderr[-4000:]}"


def _runnable(command: str) -> bool:
    return not any(marker in command for marker in SKIP)


def test_readme_commands_and_snippets_run_as_written(tmp_path, monkeypatch):
    commands = [c for c in readme_commands() if _runnable(c) and not c.startswith("torchrun")]
    assert "tunevl train recipes/quickstart.yaml" in commands and any(c.startswith("tunevl merge") for c in commands)
    for command in commands:
        _shell(command, tmp_path)
    assert (tmp_path / "runs" / "quickstart" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "runs" / "llava_sft_lora" / "tunevl.json").is_file()
    _shell("tunevl eval runs/quickstart", tmp_path)  # the first example of `tunevl eval --help`

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), (200, 30, 30)).save("cat.jpg")
    snippets = [s for s in readme_snippets() if "openai/clip-vit" not in s]  # the plain-peft one downloads
    assert len(snippets) == 3  # load a dual encoder, generate with an LVLM bundle, a merged checkpoint
    for snippet in snippets:
        namespace: dict = {}
        exec(snippet, namespace)  # noqa: S102 - the README's own snippet
    assert namespace["model"].__class__.__name__ == "CLIPModel"


@pytest.mark.distributed
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_readme_zero_commands_run_as_written(stage, tmp_path):
    commands = [c for c in readme_commands() if c.startswith("torchrun") and f"deepspeed={stage}" in c]
    assert len(commands) == 1
    _shell(commands[0], tmp_path)
    out = tmp_path / "runs" / f"quickstart-{stage}"
    assert (out / "adapter_model.safetensors").is_file() and (out / "metrics.json").is_file()
    assert "trained" in (out / "metrics.json").read_text()  # evaluation ran under ZeRO too
