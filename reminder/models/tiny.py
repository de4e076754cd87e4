"""Tiny random models of each supported family, saved like hub checkpoints.

No machine here reaches the hub, so tests and benchmarks build these (a few MB each) with ``save_pretrained`` and
load them through exactly the code path a real model takes (:func:`reminder.models.load_model` on the folder).
They reuse the embedded model's tokenizer (SmolLM2's, with the vision special tokens each family needs).
"""

from __future__ import annotations

from pathlib import Path

import torch

FAMILIES = ("idefics3", "llava", "qwen2_vl", "qwen2_5_vl")

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ IMAGE }}{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _text(vocab: int, **extra) -> dict:
    return dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=2, hidden_size=64,
                intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=2048, tie_word_embeddings=False, **extra)


def build_tiny(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Build and save a tiny random ``family`` VLM (model + processor) into ``folder``."""
    import transformers as tf

    from .embedded import ensure_embedded
    from .families import image_only_processor

    if family not in FAMILIES:
        raise ValueError(f"unknown family '{family}' (choose from {', '.join(FAMILIES)})")
    folder = Path(folder)
    tok = tf.AutoTokenizer.from_pretrained(ensure_embedded())
    torch.manual_seed(seed)
    if family == "idefics3":
        image = "<image>"
        config = tf.Idefics3Config(
            text_config=_text(len(tok), model_type="llama"),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=64, patch_size=16),
            scale_factor=2, image_token_id=tok.convert_tokens_to_ids(image))
        model = tf.Idefics3ForConditionalGeneration(config)
        ip = tf.Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 64},
                                          max_image_size={"longest_edge": 64})
        proc = tf.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4,
                                    chat_template=CHATML.replace("IMAGE", "'<image>'"))
    elif family == "llava":
        config = tf.LlavaConfig(
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14,
                               projection_dim=32),
            text_config=_text(len(tok), model_type="llama"),
            image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
            vision_feature_select_strategy="default")
        model = tf.LlavaForConditionalGeneration(config)
        ip = tf.CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
        proc = tf.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14,
                                 vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                 chat_template=CHATML.replace("IMAGE", "'<image>\n'"))
    else:
        tok.add_special_tokens({"additional_special_tokens": ["<|vision_start|>", "<|vision_end|>",
                                                              "<|image_pad|>", "<|video_pad|>"]})
        ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                                                         "<|video_pad|>")}
        text = _text(len(tok), rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                "rope_theta": 10000.0})
        common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                      vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
        if family == "qwen2_vl":
            vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                          temporal_patch_size=2)
            config = tf.Qwen2VLConfig(text_config=text, vision_config=vision, **common)
            model = tf.Qwen2VLForConditionalGeneration(config)
        else:
            vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                          spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64, window_size=56,
                          fullatt_block_indexes=[1])
            config = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
            model = tf.Qwen2_5_VLForConditionalGeneration(config)
        tok.chat_template = CHATML.replace("IMAGE", "'<|vision_start|><|image_pad|><|vision_end|>'")
        proc = image_only_processor(tf.Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112), tok)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if family.startswith("qwen"):  # the image-only processor cannot save itself; its parts can
        proc.tokenizer._set_processor_class("Qwen2VLProcessor")
        proc.tokenizer.save_pretrained(folder)
        proc.image_processor.save_pretrained(folder)
    else:
        proc.save_pretrained(folder)
    return folder
