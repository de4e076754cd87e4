"""One small interface over the VLM families: inputs, embeddings, a cached forward, hidden states, pixels.

Every forward of the project (prefill, decode steps, soft-prompt checks, teacher-forced scoring, attacks, training)
goes through :meth:`VLMAdapter.forward` on *embeddings*: the family-specific parts are only how image features are
merged into the prompt embeddings, how positions are laid out (1-D, or Qwen2-VL's 3-D M-RoPE), and how raw pixels
become the vision tower's input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import DynamicCache


@dataclass
class Prompt:
    """A tokenised request. ``input_ids``: [1, L]; ``pixels``: the processor's image tensors (empty without image).

    ``image_text``: the words the model read in the image (a reading adapter: "" when it holds none), None where the
    model has no reading channel or there is no image.
    """

    input_ids: torch.Tensor
    pixels: dict[str, torch.Tensor] = field(default_factory=dict)
    text: str = ""
    image_text: str | None = None

    @property
    def has_image(self) -> bool:
        return bool(self.pixels)

    def __len__(self) -> int:
        return self.input_ids.shape[1]


@dataclass
class Encoded:
    """Prompt embeddings ready for the language model. ``embeds``: [1, L, d]; ``positions``: family layout."""

    embeds: torch.Tensor
    positions: torch.Tensor
    next_position: int  # the position of the first token after the prompt (L for 1-D, L + rope delta for M-RoPE)

    def __len__(self) -> int:
        return self.embeds.shape[1]


class VLMAdapter:
    """Family-independent wrapper around a ``*ForConditionalGeneration`` model and its processor."""

    family = "base"
    pixel_keys: tuple[str, ...] = ("pixel_values",)
    reading: str | None = None  # names the reading channel's settings where the adapter has one (cache keys)

    def __init__(self, model, processor, name: str):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.lora_id: str | None = None  # content hash of a merged LoRA adapter (set by merge_lora)
        cfg = self.text_config
        self.hidden_size: int = cfg.hidden_size
        self.num_layers: int = cfg.num_hidden_layers
        self.context_length: int = getattr(cfg, "max_position_embeddings", 4096)
        self.eos_ids: set[int] = self._eos_ids()
        self.suppress_ids = torch.tensor(self._never_generate(), dtype=torch.long)

    # -- family hooks -------------------------------------------------------------------------------------
    @classmethod
    def load_processor(cls, folder):
        """The processor saved beside the model."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(folder)

    @property
    def text_config(self):
        return self.model.config.get_text_config()

    @property
    def language_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    def language_model_owner(self) -> tuple[torch.nn.Module, str]:
        """(module, attribute) that holds :attr:`language_model` (to swap in a merged copy)."""
        return self.model.model, "language_model"

    def image_features(self, pixels: dict[str, torch.Tensor]) -> torch.Tensor:
        """Vision tower + connector: [n_image_tokens, d]."""
        out = self.model.model.get_image_features(**pixels, return_dict=True).pooler_output
        return torch.cat(list(out), dim=0) if isinstance(out, (list, tuple)) else out.reshape(-1, out.shape[-1])

    def prompt_positions(self, prompt: Prompt) -> torch.Tensor:
        """Position ids of the prompt tokens: [1, L] (1-D families)."""
        return torch.arange(len(prompt), device=self.device)[None]

    def positions(self, start: int, n: int) -> torch.Tensor:
        """Position ids of ``n`` text tokens from ``start`` on, in the language model's layout."""
        return torch.arange(start, start + n, device=self.device)[None]

    def pack_pixels(self, x: torch.Tensor, prompt: Prompt) -> dict[str, torch.Tensor]:
        """Normalised image [3, H, W] (at the processor's output size) -> the vision tower's pixel inputs."""
        shape = prompt.pixels["pixel_values"].shape
        return {"pixel_values": x.reshape(shape).to(self.dtype)}

    # -- shared machinery ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    def _eos_ids(self) -> set[int]:
        vocab = self.tokenizer.get_vocab()
        ids = {self.tokenizer.eos_token_id}
        ids.update(vocab[t] for t in ("<|im_end|>", "<end_of_utterance>", "<|endoftext|>", "</s>") if t in vocab)
        gen = getattr(self.model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        return {i for i in ids if i is not None}

    def _never_generate(self) -> list[int]:
        """Image placeholders and other vision specials: a decoding loop masks them out."""
        vocab = self.tokenizer.get_vocab()
        names = ("<image>", "<fake_token_around_image>", "<global-img>", "<|image_pad|>", "<|video_pad|>",
                 "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")
        ids = {vocab[n] for n in names if n in vocab} | {self.image_token_id}
        size = self.model.get_output_embeddings().weight.shape[0]
        return sorted(i for i in ids if i < size)

    def chat_text(self, prompt: str, with_image: bool, prefill: str = "", system: str | None = None) -> str:
        """The chat-templated prompt text, ending with the assistant turn (and the prefill, if any)."""
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": prompt}]
        messages = ([{"role": "system", "content": [{"type": "text", "text": system}]}] if system else [])
        messages.append({"role": "user", "content": content})
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text + prefill

    def build(self, prompt: str, image: Image.Image | None = None, prefill: str = "",
              system: str | None = None) -> Prompt:
        """Tokenise a request (chat template, optional image and assistant prefill)."""
        text = self.chat_text(prompt, image is not None, prefill, system)
        kwargs = {"images": [image.convert("RGB")]} if image is not None else {}
        batch = self.processor(text=text, return_tensors="pt", add_special_tokens=False, **kwargs)
        pixels = {k: batch[k].to(self.device) for k in self.pixel_keys if k in batch and image is not None}
        extra = {k: batch[k].to(self.device) for k in ("mm_token_type_ids",) if k in batch}
        p = Prompt(batch["input_ids"].to(self.device), pixels, text)
        p.pixels.update(extra if image is not None else {})
        return p

    def tokens(self, text: str) -> torch.Tensor:
        """Plain token ids of ``text`` (no special tokens): [1, T]."""
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.device)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings: [B, T] -> [B, T, d]."""
        return self.model.get_input_embeddings()(ids)

    def encode(self, prompt: Prompt, pixels: dict[str, torch.Tensor] | None = None) -> Encoded:
        """Prompt embeddings with image features merged in; ``pixels`` overrides the prompt's (attacks)."""
        embeds = self.embed(prompt.input_ids)
        pixels = prompt.pixels if pixels is None else pixels
        if pixels:
            vision = {k: v for k, v in pixels.items() if k != "mm_token_type_ids"}
            feats = self.image_features(vision).to(embeds.dtype)
            mask = (prompt.input_ids == self.image_token_id)[..., None]
            if int(mask.sum()) != feats.shape[0]:
                raise ValueError(f"{int(mask.sum())} image tokens but {feats.shape[0]} image features")
            embeds = embeds.masked_scatter(mask, feats)
        positions = self.prompt_positions(prompt)
        return Encoded(embeds, positions, int(positions.max()) + 1)

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.text_config)

    def extend(self, enc: Encoded, *parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sequence "prompt, then ``parts``" ready for :meth:`forward`: (embeds [1, L, d], positions).

        ``enc``: the encoded prompt; each part is token ids [1, T] (embedded here) or embeddings [1, n, d] (a soft
        prompt, in the model's dtype); the parts' positions continue the prompt's.
        """
        pieces = [p.to(self.dtype) if p.is_floating_point() else self.embed(p) for p in parts]
        n = sum(p.shape[1] for p in pieces)
        return (torch.cat([enc.embeds, *pieces], dim=1),
                torch.cat([enc.positions, self.positions(enc.next_position, n)], dim=-1))

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache: DynamicCache | None = None,
                layer: int = -1, mask: torch.Tensor | None = None,
                pad_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the language model on embeddings [B, T, d] (on top of ``cache``, which it extends).

        ``mask``: who sees whom, a boolean [T, T] or one per row [B, T, T] (row: query, column: key; True = attends)
        that replaces the causal mask (without a cache only); ``pad_mask`` [B, cached + T] (1 on real tokens) hides
        the padding of a batch padded on the left (:func:`reminder.batching.pad_left`), causally. Returns (final
        hidden state [B, T, d] (normed, the lm_head input), hidden state of ``layer`` [B, T, d]); ``layer`` indexes
        the hidden-states tuple (0 = embeddings, -1 = the final normed state).
        """
        want_layers = layer not in (-1, self.num_layers)
        extra = {"attention_mask": pad_mask} if pad_mask is not None else {}
        if mask is not None:  # additive, in the model's dtype: what eager and SDPA attention both take as given
            blocked = torch.zeros(mask.shape, dtype=embeds.dtype, device=embeds.device)
            blocked = blocked.masked_fill(~mask.to(embeds.device), torch.finfo(embeds.dtype).min)
            extra["attention_mask"] = (blocked[None] if blocked.dim() == 2 else blocked)[:, None].expand(
                embeds.shape[0], 1, -1, -1)
        out = self.language_model(inputs_embeds=embeds, position_ids=positions, cache=cache,
                                  use_cache=cache is not None, output_hidden_states=want_layers, **extra)
        last = out.last_hidden_state
        return last, (out.hidden_states[layer] if want_layers else last)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """lm_head on final hidden states: [..., d] -> [..., V] (float32)."""
        return self.model.get_output_embeddings()(hidden).float()

    def pixels_from_image(self, x: torch.Tensor, prompt: Prompt) -> dict[str, torch.Tensor]:
        """Differentiable preprocessing: image [3, H, W] in [0, 1] -> the prompt's pixel inputs.

        Resizes (bilinear) to the processor's output size for this prompt and normalises with its mean/std.
        """
        if not prompt.has_image:
            raise ValueError("this prompt has no image to replace")
        h, w = self.pixel_size(prompt)
        if tuple(x.shape[-2:]) != (h, w):
            x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
        ip = self.processor.image_processor
        mean = torch.tensor(ip.image_mean, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.tensor(ip.image_std, dtype=x.dtype, device=x.device)[:, None, None]
        out = dict(prompt.pixels)
        out.update(self.pack_pixels((x - mean) / std, prompt))
        return out

    def pixel_size(self, prompt: Prompt) -> tuple[int, int]:
        """(H, W) of the image as the vision tower receives it for this prompt."""
        return tuple(prompt.pixels["pixel_values"].shape[-2:])

    def image_tensor(self, image: Image.Image, prompt: Prompt) -> torch.Tensor:
        """The image resized to :meth:`pixel_size` as a [3, H, W] tensor in [0, 1] (the space attacks work in)."""
        h, w = self.pixel_size(prompt)
        arr = torch.frombuffer(bytearray(image.convert("RGB").resize((w, h), Image.BICUBIC).tobytes()),
                               dtype=torch.uint8)
        return arr.reshape(h, w, 3).permute(2, 0, 1).float().div(255).to(self.device)
