"""Family adapters: SmolVLM/Idefics3, LLaVA-1.5 and Qwen2-VL / Qwen2.5-VL."""

from __future__ import annotations

import torch

from .base import Prompt, VLMAdapter


class Idefics3Adapter(VLMAdapter):
    """SmolVLM / Idefics3 (and the embedded model). Pixels: [1, n_images, 3, H, W]."""

    family = "idefics3"
    pixel_keys = ("pixel_values", "pixel_attention_mask")

    @property
    def language_model(self) -> torch.nn.Module:
        return self.model.model.text_model

    def language_model_owner(self) -> tuple[torch.nn.Module, str]:
        return self.model.model, "text_model"

    def image_features(self, pixels: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model.model.get_image_features(**pixels, return_dict=True).pooler_output
        return torch.cat(list(out), dim=0)

    def pixel_size(self, prompt: Prompt) -> tuple[int, int]:
        if prompt.pixels["pixel_values"].shape[1] != 1:
            raise ValueError("differentiable pixels need a single image tile (do_image_splitting=False)")
        return tuple(prompt.pixels["pixel_values"].shape[-2:])


class LlavaAdapter(VLMAdapter):
    """LLaVA-1.5 (``LlavaForConditionalGeneration``). Pixels: [1, 3, H, W]."""

    family = "llava"


class Qwen2VLAdapter(VLMAdapter):
    """Qwen2-VL and Qwen2.5-VL: M-RoPE positions [3, 1, T]; pixels are flattened patches [N, C·t·p·p]."""

    family = "qwen2_vl"
    pixel_keys = ("pixel_values", "image_grid_thw")

    @classmethod
    def load_processor(cls, folder):
        """AutoProcessor, or (without torchvision, which the video processor needs) an image-only processor."""
        import transformers as tf

        try:
            return tf.AutoProcessor.from_pretrained(folder)
        except (AttributeError, ImportError, TypeError, ValueError):
            tok = tf.AutoTokenizer.from_pretrained(folder)
            image_processor = tf.AutoImageProcessor.from_pretrained(folder)
            return image_only_processor(image_processor, tok)

    def prompt_positions(self, prompt: Prompt) -> torch.Tensor:
        if not prompt.has_image:
            return self.positions(0, len(prompt))
        positions, _ = self.model.model.get_rope_index(
            prompt.input_ids, mm_token_type_ids=prompt.pixels["mm_token_type_ids"],
            image_grid_thw=prompt.pixels["image_grid_thw"],
        )
        return positions

    def positions(self, start: int, n: int) -> torch.Tensor:
        # Text after the prompt: the same index on all three M-RoPE axes (cache length + rope delta).
        return torch.arange(start, start + n, device=self.device).view(1, 1, -1).expand(3, 1, -1)

    def pixel_size(self, prompt: Prompt) -> tuple[int, int]:
        _, gh, gw = prompt.pixels["image_grid_thw"][0].tolist()
        p = self.processor.image_processor.patch_size
        return gh * p, gw * p

    def pack_pixels(self, x: torch.Tensor, prompt: Prompt) -> dict[str, torch.Tensor]:
        ip = self.processor.image_processor
        p, m, t = ip.patch_size, ip.merge_size, ip.temporal_patch_size
        c, h, w = x.shape
        gh, gw = h // p, w // p
        patches = x.reshape(c, gh // m, m, p, gw // m, m, p).permute(1, 4, 2, 5, 0, 3, 6)
        patches = patches[:, :, :, :, :, None].expand(*patches.shape[:5], t, p, p)
        return {"pixel_values": patches.reshape(gh * gw, c * t * p * p).to(self.dtype)}


FAMILIES: dict[str, type[VLMAdapter]] = {
    "idefics3": Idefics3Adapter,
    "smolvlm": Idefics3Adapter,
    "llava": LlavaAdapter,
    "qwen2_vl": Qwen2VLAdapter,
    "qwen2_5_vl": Qwen2VLAdapter,
}


def image_only_processor(image_processor, tokenizer):
    """A Qwen2-VL processor without its video processor (which needs torchvision); images and text work as usual."""
    from transformers import Qwen2VLProcessor

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            return None if argument is None else super().check_argument_for_proper_class(argument_name, argument)

    return ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                     chat_template=tokenizer.chat_template)
