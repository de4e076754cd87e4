"""The command line: streamed generation, JSON, batch, score, and one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import random_reminder
from PIL import Image

from reminder import DEFAULT_MODEL
from reminder.cli import main
from reminder.paths import CHECKPOINTS, default_reminder


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reminder", *args], capture_output=True, text=True, timeout=300)


def test_generate_streams_and_json(tmp_path):
    out = run_cli("generate", "--model", "embedded", "--prompt", "What is the capital of France?",
                  "--max-new-tokens", "12")
    assert out.returncode == 0 and "Paris" in out.stdout
    out = run_cli("generate", "--prompt", "What is the capital of France?", "--max-new-tokens", "6", "--json")
    data = json.loads(out.stdout)
    assert set(data) >= {"text", "tokens", "harm_scores", "checks", "injections", "generate_seconds", "model"}
    assert data["model"] == DEFAULT_MODEL and len(data["tokens"]) <= 6


def test_generate_uses_the_models_shipped_reminder_unless_told_none():
    args = ("generate", "--model", "embedded", "--prompt", "What is the capital of France?", "--max-new-tokens", "20",
            "--json")
    guarded = json.loads(run_cli(*args).stdout)
    assert guarded["harm_scores"] and guarded["checks"]  # scored and checked
    plain = json.loads(run_cli(*args, "--reminder", "none").stdout)
    assert plain["harm_scores"] is None and plain["checks"] == [] and plain["tokens"] == guarded["tokens"]
    assert default_reminder("embedded") == CHECKPOINTS / "embedded" and default_reminder("/some/folder") is None


def test_generate_with_reminder_image_and_batch(tiny_folders, tiny_models, tmp_path, capsys):
    folder = str(tiny_folders["idefics3"])
    rem = random_reminder(tiny_models["idefics3"], interval=4)
    rem.model = folder
    rem.save(tmp_path / "rem")
    Image.new("RGB", (50, 40), "red").save(tmp_path / "img.png")
    (tmp_path / "in.jsonl").write_text(
        json.dumps({"id": "a", "prompt": "hello", "image": "img.png"}) + "\n"
        + json.dumps({"id": "b", "prompt": "hi", "prefill": "Sure,"}) + "\n"
        + json.dumps({"id": "c", "prompt": ""}) + "\n")
    code = main(["generate", "--model", folder, "--reminder", str(tmp_path / "rem"), "--threshold", "0",
                 "--max-new-tokens", "8", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert code == 1 and [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["injections"] == [4] and len(rows[0]["harm_scores"]) == len(rows[0]["tokens"])
    assert rows[2]["error"] == "empty prompt"
    (tmp_path / "s.jsonl").write_text(json.dumps({"id": "x", "prompt": "hello", "response": "Sure, here it is"}))
    assert main(["score", "--model", folder, "--reminder", str(tmp_path / "rem"), "--input",
                 str(tmp_path / "s.jsonl"), "--output", str(tmp_path / "so.jsonl")]) == 0
    scored = json.loads((tmp_path / "so.jsonl").read_text())
    assert len(scored["p_unsafe"]) == len(scored["tokens"]) > 0 and 0 <= scored["final"] <= 1


@pytest.mark.parametrize("args, message", [
    (["--prompt", ""], "empty prompt"),
    (["--prompt", "hi", "--image", "/nonexistent.png"], "image not found"),
    (["--prompt", "hi", "--image", __file__], "not a readable image"),
    (["--prompt", "hi", "--reminder", "/nonexistent"], "reminder folder not found"),
    (["--prompt", "word " * 9000], "context"),
])
def test_bad_input_is_one_clear_line(args, message, capsys):
    assert main(["generate", "--max-new-tokens", "4", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and message in err[-1]
