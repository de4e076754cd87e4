"""Batched plain decoding: several prompts generated together, each exactly as :func:`reminder.generate` would.

Prompts are decoded together only when their embeddings have the same length, so no batch needs padding (a padded
attention mask sends SDPA to a several-times slower path on CPU, and padding would change positions). Each prompt
keeps its own position layout: a batch may mix text and image prompts and, for Qwen2-VL's M-RoPE, prompts whose
rope offsets differ. Only unguarded greedy decoding batches: a guarded generation's checks and injections change
each row's cache on their own schedule, so it runs one row at a time.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence

import torch

from .checkpoint import Reminder
from .generation import Generation, GenerationConfig, check_prompt, text_piece
from .models.base import Encoded, VLMAdapter


def batches(keys: Sequence[Hashable], size: int) -> list[list[int]]:
    """Indices of equal ``keys`` in batches of at most ``size``, the batches in order of their first index."""
    out: list[list[int]] = []
    filling: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        batch = filling.get(key)
        if batch is None or len(batch) >= size:
            batch = filling[key] = []
            out.append(batch)
        batch.append(i)
    return out


def generate_batch(adapter: VLMAdapter, encoded: Sequence[Encoded], reminder: Reminder | None = None,
                   config: GenerationConfig | None = None, batch_size: int = 16) -> list[Generation]:
    """What ``generate(adapter, prompt, reminder=reminder, config=config)`` gives for each encoded prompt, decoded in
    batches of up to ``batch_size`` prompts of one length (greedy, unguarded: ``config.guard`` must be off when a
    reminder is given; its per-token probe still scores every token).

    ``encoded``: each prompt's :meth:`VLMAdapter.encode` (embeds [1, L, d], positions [1, L] or [3, 1, L]), made
    under ``torch.inference_mode()``. A batch's decoding time is shared evenly among its rows' ``generate_seconds``.
    """
    cfg = config or GenerationConfig()
    if cfg.do_sample:
        raise ValueError("batched generation is greedy only (do_sample=False)")
    if reminder is not None and cfg.guard:
        raise ValueError("guarded generation runs one prompt at a time (pass a config with guard=False)")
    for enc in encoded:
        check_prompt(adapter, enc, cfg.max_new_tokens)
    out: dict[int, Generation] = {}
    for idx in batches([len(e) for e in encoded], batch_size):
        out.update(zip(idx, _generate_same_length(adapter, [encoded[i] for i in idx], reminder, cfg), strict=True))
    return [out[i] for i in range(len(encoded))]


@torch.inference_mode()
def _generate_same_length(adapter: VLMAdapter, encoded: list[Encoded], reminder: Reminder | None,
                          cfg: GenerationConfig) -> list[Generation]:
    """Greedy decoding of B prompts of one length L together; each row stops at its first EOS (unless ignore_eos)."""
    n_rows, length = len(encoded), len(encoded[0])
    layer = reminder.layer if reminder else -1
    probe = reminder.token_probe() if reminder else None
    suppress = adapter.suppress_ids.to(adapter.device)
    eos = torch.tensor(sorted(adapter.eos_ids), device=adapter.device)
    offsets = torch.tensor([e.next_position - length for e in encoded], device=adapter.device)  # M-RoPE deltas [B]
    cache = adapter.new_cache()
    last, _ = adapter.forward(torch.cat([e.embeds for e in encoded]), torch.cat([e.positions for e in encoded], -2),
                              cache, layer)  # embeds [B, L, d], positions [B, L] or [3, B, L]
    logits = adapter.logits(last[:, -1])  # [B, V]
    done = torch.zeros(n_rows, dtype=torch.bool, device=adapter.device)
    ids: list[list[int]] = [[] for _ in encoded]
    scores: list[list[float]] = [[] for _ in encoded]
    start = time.perf_counter()
    for n in range(cfg.max_new_tokens):
        logits[:, suppress] = float("-inf")
        tok = logits.argmax(-1)  # [B]
        if not cfg.ignore_eos:
            done |= torch.isin(tok, eos)
        live = [i for i, d in enumerate(done.tolist()) if not d]
        for i, t in zip(live, tok[live].tolist(), strict=True):
            ids[i].append(t)
        if not live or (probe is None and n == cfg.max_new_tokens - 1):  # the last token's forward only scores it
            break
        positions = adapter.positions(cache.get_seq_length(), 1) + offsets[:, None]  # [B, 1] or [3, B, 1]
        last, hid = adapter.forward(adapter.embed(tok[:, None]), positions, cache, layer)
        logits = adapter.logits(last[:, 0])
        if probe is not None:
            p = probe(hid[live, 0]).tolist()
            for i, p_tok in zip(live, p, strict=True):
                scores[i].append(p_tok)
    seconds = (time.perf_counter() - start) / n_rows
    return [_generation(adapter, row, scores[i] if probe is not None else None, seconds, length, cfg)
            for i, row in enumerate(ids)]


def _generation(adapter: VLMAdapter, ids: list[int], scores: list[float] | None, seconds: float, prompt_tokens: int,
                cfg: GenerationConfig) -> Generation:
    """The Generation :func:`reminder.generation.stream` would have built from these token ids and scores."""
    pieces: list[str] = []
    decoded = ""
    for n in range(1, len(ids) + 1):
        piece, decoded = text_piece(adapter.tokenizer, ids[:n], decoded)
        pieces.append(piece)
    return Generation(decoded, ids, pieces, scores, generate_seconds=seconds, prompt_tokens=prompt_tokens,
                      model=adapter.name, mode=cfg.mode)
