"""The detector's training data as hidden states: the model's labelled answers cut into (prompt, partial answer)
pairs, and each read through the soft prompt where guarded generation would check it.

Training answers are read at their check points (:func:`reminder.generation.check_points`, the schedule guarded
generation runs) in one forward per answer (:func:`check_features`), or cut at random word boundaries; validation and
test answers at one random word boundary each (:func:`pair_features`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from reminder.generation import check_points

from .examples import Answer, Pair, cut_response, labelled_responses, soft_batch, training_image

if TYPE_CHECKING:
    from .detector_config import DetectorConfig


def load_pairs(adapter, cfg: DetectorConfig, splits: tuple[str, ...] = ("train", "val", "test")) -> list[Pair]:
    """Harmful and benign (prompt, partial response, label) pairs of ``splits``, each response (cached) cut at
    ``cfg.train_cuts`` random word boundaries in the train split and at one in the others.

    ``cfg.openings`` adds harmful training answers that start with a mild opening the model then continues ("Great
    question!"): unprompted harmful answers that open politely before the harm are the ones the probe misses most.
    ``cfg.images`` adds training conversations with each image in the user turn (harmful: after the prefill and
    unprompted; benign: the model's answer), so the probe also sees states shaped by image tokens.
    """
    rng = random.Random(cfg.seed)
    pairs: list[Pair] = []
    for split in splits:
        for ans in split_answers(adapter, cfg, split):
            for _ in range(cfg.train_cuts if split == "train" else 1):
                partial, rest = cut_response(ans.response, rng)
                pairs.append(Pair(ans.record.prompt, partial, ans.unsafe, rest, split, ans.image))
    return pairs


def split_answers(adapter, cfg: DetectorConfig, split: str) -> list[Answer]:
    """The model's labelled answers of ``split`` (capped by ``cfg.max_per_split``; openings and images: train only)."""
    cap = cfg.max_per_split.get(split)
    train = split == "train"
    return labelled_responses(adapter, split, cfg.max_new_tokens, {"harmful": cap, "benign": cap}, cfg.cache,
                              openings=cfg.openings if train else (), images=cfg.images if train else (),
                              typographic=None if cfg.typographic < 0 else cfg.typographic)


def probe_features(adapter, cfg: DetectorConfig, soft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                           np.ndarray, np.ndarray]:
    """Every pair the probes learn from and are scored on, read through ``soft``: (check [N, d], token [N, d],
    unsafe [N], split [N]). Training answers are read at their check points (``cfg.cuts == "checks"``, with
    :func:`check_features`) or cut at random; validation and test ones at one random word boundary each."""
    parts = []
    if cfg.cuts == "checks":
        answers = split_answers(adapter, cfg, "train")
        check, token, owner = check_features(adapter, answers, soft, cfg.interval, cfg.max_new_tokens,
                                             cfg.check_start, cfg.check_end, cfg.layer, desc="train answers")
        parts.append((check, token, np.array([answers[i].unsafe for i in owner], dtype=int),
                      np.full(len(owner), "train")))
    pairs = load_pairs(adapter, cfg, ("val", "test") if cfg.cuts == "checks" else ("train", "val", "test"))
    check, token = pair_features(adapter, pairs, soft, cfg.layer, cfg.batch_size)
    parts.append((check, token, np.array([p.unsafe for p in pairs], dtype=int), np.array([p.split for p in pairs])))
    return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))


def answer_ids(adapter, answer: Answer, max_new_tokens: int) -> list[int]:
    """The answer's token ids after its prefill (at most ``max_new_tokens``)."""
    return adapter.tokens(answer.response[len(answer.prefill):])[0].tolist()[:max_new_tokens]


def check_pairs(adapter, answer: Answer, interval: int, max_new_tokens: int, start: bool = False,
                end: bool = False) -> list[Pair]:
    """The partial responses guarded generation checks while it produces the answer (see :func:`check_points`)."""
    ids = answer_ids(adapter, answer, max_new_tokens)
    return [Pair(answer.record.prompt, answer.prefill + adapter.tokenizer.decode(ids[:k]), answer.unsafe,
                 adapter.tokenizer.decode(ids[k:]), image=answer.image)
            for k in check_points(len(ids), interval, max_new_tokens, start, end)]


@torch.inference_mode()
def check_features(adapter, answers: list[Answer], soft: torch.Tensor, interval: int, max_new_tokens: int,
                   start: bool = False, end: bool = False, layer: int = -1,
                   desc: str = "check features") -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Each answer read at every point guarded generation checks it (:func:`check_points`), as it reads them.

    One forward per answer: prompt + answer, then one copy of the soft prompt [1, n, d] per check point, each copy
    seeing the prompt and the answer's tokens up to its point (and itself, causally) and placed at the positions it
    would take there, as if the cache had been cropped at that point. Returns (check [N, d]: ``layer`` state at the
    last soft token; token [N, d]: the state at the last token before the point; the answer of each row [N]),
    float32, rows in answer order and then point order: the rows of :func:`check_pairs`, without re-encoding each
    partial answer as :func:`pair_features` does (``benchmarks.check_features`` measures the difference).
    """
    n = soft.shape[1]
    checks, tokens, owner = [], [], []
    for i, ans in enumerate(tqdm(answers, desc=desc, unit="answer", leave=False)):
        ids = answer_ids(adapter, ans, max_new_tokens)
        points = check_points(len(ids), interval, max_new_tokens, start, end)
        if not points:
            continue
        enc = adapter.encode(adapter.build(ans.record.prompt, training_image(ans.image), prefill=ans.prefill))
        p, body = len(enc), ids[:points[-1]]
        length = p + len(body)
        embeds, positions = adapter.extend(enc, torch.tensor([body], dtype=torch.long, device=adapter.device))
        embeds = torch.cat([embeds, *[soft.to(adapter.dtype)] * len(points)], dim=1)  # copy j at point j's positions
        positions = torch.cat([positions, *[adapter.positions(enc.next_position + k, n) for k in points]], dim=-1)
        size = length + n * len(points)
        sees = torch.ones(size, size, dtype=torch.bool).tril()
        sees[length:, :length] = False
        for j, k in enumerate(points):  # copy j: the prompt and answer up to k, then itself causally
            rows = slice(length + j * n, length + (j + 1) * n)
            sees[rows, :p + k] = True
            sees[rows, length:rows.start] = False
        _, hid = adapter.forward(embeds, positions, None, layer, mask=sees)
        checks.append(hid[0, length + n - 1::n].float().cpu())
        tokens.append(hid[0, [p + k - 1 for k in points]].float().cpu())
        owner += [i] * len(points)
    if not checks:
        return torch.empty(0, adapter.hidden_size), torch.empty(0, adapter.hidden_size), np.zeros(0, dtype=int)
    return torch.cat(checks), torch.cat(tokens), np.array(owner)


@torch.inference_mode()
def pair_features(adapter, pairs: list[Pair], soft: torch.Tensor, layer: int = -1,
                  batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(check [N, d], token [N, d]) float32 features, batched by similar length."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].prompt) + len(pairs[i].partial))
    check = torch.empty(len(pairs), adapter.hidden_size)
    token = torch.empty(len(pairs), adapter.hidden_size)
    with tqdm(total=len(pairs), desc="probe features", unit="pair", leave=False) as bar:
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            out = soft_batch(adapter, [pairs[j] for j in idx], soft, layer)
            check[idx], token[idx] = out["check"].float().cpu(), out["token"].float().cpu()
            bar.update(len(idx))
    return check, token
