"""Batched plain decoding: several prompts generated together, each as :func:`reminder.generate` would.

Prompts are sorted by length and decoded in batches; a batch's shorter prompts are padded on the left, with an
attention mask that hides the padding and each row's own positions, so every row decodes as it would alone (the same
greedy tokens, up to float rounding in a near-tie). Each prompt keeps its own position layout: a batch may mix text
and image prompts and, for Qwen2-VL's M-RoPE, prompts whose rope offsets differ. Only unguarded greedy decoding
batches: a guarded generation's checks and injections change each row's cache on their own schedule, so it runs one
row at a time. ``python -m benchmarks.eval_batching`` measures the gain.

Training reads its examples where guarded generation would check them (:class:`CheckReading`): the soft prompt rides
on top of the cache in the same forward as the next real token, as in guarded generation's fused check, and is
cropped away again, so the answers are those of plain decoding and the check states come almost for free.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from .checkpoint import Reminder
from .generation import Generation, GenerationConfig, _truncate, check_due, check_prompt, text_piece
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


@dataclass
class CheckReading:
    """What to read while decoding: the ``layer`` state at the last of the soft-prompt vectors ``soft`` [1, n, d]
    placed where guarded generation checks (every ``interval`` tokens, with ``start`` also before the first)."""

    soft: torch.Tensor
    interval: int = 16
    layer: int = -1
    start: bool = False


@dataclass
class CheckStates:
    """One answer's readings: ``points`` (generated tokens before each check), ``check`` [k, d] (state at the last
    soft token), ``token`` [k, d] (state at the last real token before the point), float32 on the CPU."""

    points: list[int]
    check: torch.Tensor
    token: torch.Tensor


def generate_batch(adapter: VLMAdapter, encoded: Sequence[Encoded], reminder: Reminder | None = None,
                   config: GenerationConfig | None = None, batch_size: int = 16,
                   reading: CheckReading | None = None, drop_ended: bool = True) -> list[Generation]:
    """What ``generate(adapter, prompt, reminder=reminder, config=config)`` gives for each encoded prompt, decoded in
    batches of up to ``batch_size`` prompts of similar length (greedy, unguarded: ``config.guard`` must be off when a
    reminder is given; its per-token probe still scores every token).

    ``encoded``: each prompt's :meth:`VLMAdapter.encode` (embeds [1, L, d], positions [1, L] or [3, 1, L]), made
    under ``torch.inference_mode()``. A batch's decoding time is shared evenly among its rows' ``generate_seconds``.
    With ``reading``, each Generation also carries its :class:`CheckStates` as ``.check_states`` (an attribute,
    not a field: it is never serialised). ``drop_ended``: rows that have ended leave their batch (False keeps them
    to the end, as before; ``benchmarks.recipe_speed`` compares).
    """
    cfg = config or GenerationConfig()
    if cfg.do_sample:
        raise ValueError("batched generation is greedy only (do_sample=False)")
    if reminder is not None and cfg.guard:
        raise ValueError("guarded generation runs one prompt at a time (pass a config with guard=False)")
    for enc in encoded:
        check_prompt(adapter, enc, cfg.max_new_tokens)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: dict[int, Generation] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        out.update(zip(idx, _generate_padded(adapter, [encoded[i] for i in idx], reminder, cfg, reading, drop_ended),
                       strict=True))
    return [out[i] for i in range(len(encoded))]


def pad_left(adapter: VLMAdapter, encoded: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B prompts padded on the left to the longest: (embeds [B, L, d], positions [B, L] or [3, B, L], attention mask
    [B, L], 1 on real tokens). Padding gets zero embeddings and position 0; the mask hides it."""
    width = max(len(e) for e in encoded)
    first = encoded[0]
    embeds = first.embeds.new_zeros(len(encoded), width, first.embeds.shape[-1])
    positions = first.positions.new_zeros(*first.positions.shape[:-2], len(encoded), width)
    mask = torch.zeros(len(encoded), width, dtype=torch.long, device=first.embeds.device)
    for i, e in enumerate(encoded):
        embeds[i, width - len(e):] = e.embeds[0]
        positions[..., i, width - len(e):] = e.positions[..., 0, :]
        mask[i, width - len(e):] = 1
    return embeds, positions, mask


@torch.inference_mode()
def _generate_padded(adapter: VLMAdapter, encoded: list[Encoded], reminder: Reminder | None,
                     cfg: GenerationConfig, reading: CheckReading | None = None,
                     drop_ended: bool = True) -> list[Generation]:
    """Greedy decoding of B prompts together (left-padded); each row stops at its first EOS (unless ignore_eos).

    With ``drop_ended``, rows that have ended leave the batch (their cache rows are dropped) once they are an eighth
    of it, so the rows still decoding do not carry them to the end."""
    n_rows = len(encoded)
    layer = reminder.layer if reminder else -1
    if reading is not None:
        if reminder is not None and reminder.layer != reading.layer:
            raise ValueError("the reminder's token probe and the check reading must read one layer")
        layer = reading.layer
    probe = reminder.token_probe() if reminder else None
    suppress = adapter.suppress_ids.to(adapter.device)
    eos = torch.tensor(sorted(adapter.eos_ids), device=adapter.device)
    after = torch.tensor([e.next_position for e in encoded], device=adapter.device)  # each row's next position [B]
    cache = adapter.new_cache()
    embeds, positions, real_mask = pad_left(adapter, encoded)
    padded = bool((real_mask == 0).any())
    mask = real_mask[:, :0]  # the cache's columns (1 = a real token), grown by each forward
    states: list[list[tuple[int, torch.Tensor, torch.Tensor]]] = [[] for _ in encoded]
    rows = list(range(n_rows))  # the prompt each row of the batch (and of the cache) belongs to

    def step(x: torch.Tensor, pos: torch.Tensor, cols: torch.Tensor, generated: int,
             live: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward x [b, T, d] (``cols`` [b, T]: 1 on real tokens) on the cache. With a check due after
        ``generated`` tokens the soft prompt rides along in the same forward, is read for the batch rows ``live``,
        then cropped away. Returns (final state, ``layer`` state) [b, d] at the last real token."""
        nonlocal mask
        real, b = x.shape[1], x.shape[0]
        due = reading is not None and check_due(generated, reading.interval, cfg.max_new_tokens, reading.start)
        if due:
            n = reading.soft.shape[1]
            x = torch.cat([x, reading.soft.to(x.dtype).expand(b, -1, -1)], dim=1)
            pos = torch.cat([pos, adapter.positions(generated, n) + after[:, None]], dim=-1)
            cols = torch.cat([cols, cols.new_ones(b, n)], dim=1)
        mask = torch.cat([mask, cols], dim=1)
        last, hid = adapter.forward(x, pos, cache, layer, pad_mask=mask if padded else None)
        if due:
            for i in live:
                states[rows[i]].append((generated, hid[i, -1].float().cpu(), hid[i, real - 1].float().cpu()))
            _truncate(cache, cache.get_seq_length() - n)
            mask = mask[:, :-n]
        return last[:, real - 1], hid[:, real - 1]

    last, _ = step(embeds, positions, real_mask, 0, list(range(n_rows)))
    logits = adapter.logits(last)  # [b, V]
    done = torch.zeros(n_rows, dtype=torch.bool, device=adapter.device)
    ids: list[list[int]] = [[] for _ in encoded]
    scores: list[list[float]] = [[] for _ in encoded]
    start = time.perf_counter()
    for n in range(cfg.max_new_tokens):
        logits[:, suppress] = float("-inf")
        tok = logits.argmax(-1)  # [b]
        if not cfg.ignore_eos:
            done |= torch.isin(tok, eos)
        live = [i for i, d in enumerate(done.tolist()) if not d]
        for i, t in zip(live, tok[live].tolist(), strict=True):
            ids[rows[i]].append(t)
        if not live or (probe is None and n == cfg.max_new_tokens - 1):  # the last token's forward only scores it
            break  # (a check never follows the last token)
        if drop_ended and len(rows) - len(live) >= max(len(rows) // 8, 1):  # rows that have ended leave the batch
            keep = torch.tensor(live, device=adapter.device)
            cache.batch_select_indices(keep)
            mask, after, tok, done = mask[keep], after[keep], tok[keep], done[keep]
            rows = [rows[i] for i in live]
            live = list(range(len(rows)))
        last, hid = step(adapter.embed(tok[:, None]), adapter.positions(n, 1) + after[:, None],
                         mask.new_ones(len(rows), 1), n + 1, live)
        logits = adapter.logits(last)
        if probe is not None:
            p = probe(hid[live]).tolist()
            for i, p_tok in zip(live, p, strict=True):
                scores[rows[i]].append(p_tok)
    seconds = (time.perf_counter() - start) / n_rows
    gens = [_generation(adapter, row, scores[i] if probe is not None else None, seconds, len(encoded[i]), cfg)
            for i, row in enumerate(ids)]
    if reading is not None:
        empty = torch.empty(0, adapter.hidden_size)
        for g, got in zip(gens, states, strict=True):
            g.check_states = CheckStates([k for k, _, _ in got],
                                         torch.stack([c for _, c, _ in got]) if got else empty,
                                         torch.stack([t for _, _, t in got]) if got else empty)
    return gens


def _generation(adapter: VLMAdapter, ids: list[int], scores: list[float] | None, seconds: float, prompt_tokens: int,
                cfg: GenerationConfig) -> Generation:
    """The Generation :func:`reminder.generation.stream` would have built from these token ids and scores."""
    pieces: list[str] = []
    decoded = ""
    for n in range(1, len(ids) + 1):
        piece, decoded = text_piece(adapter.tokenizer, ids[:n], decoded)
        pieces.append(piece)
    return Generation(decoded, ids, pieces, scores, generate_seconds=seconds, prompt_tokens=prompt_tokens,
                      model=adapter.name, mode=cfg.mode or "continue")
