"""The detector's training data as hidden states: the model's labelled answers cut into (prompt, partial answer)
pairs, and each read through the soft prompt where guarded generation would check it.

Training answers are read at their check points (:func:`reminder.generation.check_points`, the schedule guarded
generation runs) in one forward per answer (:func:`check_features`), or cut at random word boundaries; validation and
test answers at one random word boundary each (:func:`pair_features`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from reminder.batching import CheckReading
from reminder.generation import check_points

from .examples import Answer, Pair, cut_response, labelled_responses, soft_batch, states_read, training_image

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


def split_caps(cfg: DetectorConfig, split: str) -> tuple[dict[str, int | None], int | None]:
    """(prompts per set, image conversations per kind) of ``split``: ``cfg.max_per_split`` caps both."""
    cap = cfg.max_per_split.get(split)
    typographic = None if cfg.typographic < 0 else cfg.typographic
    if cap is not None and typographic != 0:
        typographic = cap if typographic is None else min(typographic, cap)
    return {"harmful": cap, "benign": cap}, typographic


def split_answers(adapter, cfg: DetectorConfig, split: str, soft: torch.Tensor | None = None) -> list[Answer]:
    """The model's labelled answers of ``split`` (capped by ``cfg.max_per_split``, image conversations too: see
    :func:`split_caps`; openings and images: train only); answers generated now through ``soft`` [1, n, d] leave their
    check states for :func:`check_features`."""
    caps, typographic = split_caps(cfg, split)
    train = split == "train"
    reading = None if soft is None else CheckReading(soft, cfg.interval, cfg.layer, cfg.check_start)
    return labelled_responses(adapter, split, cfg.max_new_tokens, caps, cfg.cache,
                              openings=cfg.openings if train else (), images=cfg.images if train else (),
                              typographic=typographic, reading=reading, adversarial=cfg.adversarial)


@dataclass
class GenerationChecks:
    """Generations read at every check point: ``feats`` [N, d] (check state, one row per check), ``tokens`` [N, d]
    (state at the last token before the point), ``gen`` [N] (the generation each check belongs to), ``unsafe`` and
    ``kind`` [G] per generation."""

    feats: torch.Tensor
    tokens: torch.Tensor
    gen: np.ndarray
    unsafe: np.ndarray
    kind: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """Each check's label [N]: its generation's."""
        return self.unsafe[self.gen] if len(self.gen) else np.zeros(0, dtype=int)


def generation_checks(adapter, soft: torch.Tensor, cfg: DetectorConfig, interval: int, layer: int = -1,
                      split: str = "val") -> GenerationChecks:
    """Read each ``split`` response (``cfg.max_new_tokens`` tokens) through ``soft`` at every check point (with
    ``cfg.check_start``, also before its first token; with ``cfg.check_end``, where it ends between check points)."""
    gens = split_answers(adapter, cfg, split, soft)
    feats, tokens, owner = check_features(adapter, gens, soft, interval, cfg.max_new_tokens, cfg.check_start,
                                          cfg.check_end, layer, desc=f"{split} answers", batch_size=cfg.batch_size)
    kind = ["benign" if not g.unsafe else "harmful+prefill" if g.prefill else "harmful" for g in gens]
    return GenerationChecks(feats, tokens, owner, np.array([g.unsafe for g in gens], dtype=int), np.array(kind))


def probe_features(adapter, cfg: DetectorConfig, soft: torch.Tensor,
                   interval: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, GenerationChecks]:
    """Every example the probes learn from and are scored on, read through ``soft``: (check [N, d], token [N, d],
    unsafe [N], split [N], the validation generations read at every check point for the threshold).

    ``cfg.cuts == "checks"``: every split's answers at their check points (:func:`generation_checks`; validation is
    read once, for the probes' scores and the threshold); ``"random"``: training answers cut at ``cfg.train_cuts``
    random word boundaries, validation and test ones at one (:func:`load_pairs`)."""
    val = generation_checks(adapter, soft, cfg, interval, cfg.layer, "val")
    if cfg.cuts == "checks":
        reads = {"train": generation_checks(adapter, soft, cfg, interval, cfg.layer, "train"), "val": val,
                 "test": generation_checks(adapter, soft, cfg, interval, cfg.layer, "test")}
        return (torch.cat([r.feats for r in reads.values()]), torch.cat([r.tokens for r in reads.values()]),
                np.concatenate([r.labels for r in reads.values()]),
                np.concatenate([np.full(len(r.gen), s) for s, r in reads.items()]), val)
    pairs = load_pairs(adapter, cfg)
    check, token = pair_features(adapter, pairs, soft, cfg.layer, cfg.batch_size)
    return check, token, np.array([p.unsafe for p in pairs], dtype=int), np.array([p.split for p in pairs]), val


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
                   start: bool = False, end: bool = False, layer: int = -1, desc: str = "check features",
                   batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Each answer read at every point guarded generation checks it (:func:`check_points`), as it reads them.

    One sequence per answer: prompt + answer, then one copy of the soft prompt [1, n, d] per check point, each copy
    seeing the prompt and the answer's tokens up to its point (and itself, causally) and placed at the positions it
    would take there, as if the cache had been cropped at that point. Sequences of similar size run together,
    padded on the right (``batch_size`` per forward). Answers generated in this process through the same soft
    prompt were read while they were decoded (:func:`training.examples.states_read`) and are not read again.
    Returns (check [N, d]: ``layer`` state at the last soft token;
    token [N, d]: the state at the last token before the point; the answer of each row [N]), float32, rows in answer
    order and then point order: the rows of :func:`check_pairs`, without re-encoding each partial answer as
    :func:`pair_features` does (``benchmarks.check_features`` measures the difference).
    """
    n = soft.shape[1]
    found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    reading = CheckReading(soft, interval, layer, start)
    todo = []
    for i, ans in enumerate(answers):  # those generated in this process were read on the way (not the end check)
        states = None if end else states_read(reading, max_new_tokens, ans)
        if states is None:
            todo.append(i)
        elif states.points:
            found[i] = (states.check, states.token)
    chunk = max(batch_size, 1) * 8  # answers encoded at a time (their embeddings are held until they are read)
    with tqdm(total=len(todo), desc=desc, unit="answer", leave=False, disable=not todo) as bar:
        for first in range(0, len(todo), chunk):
            seqs = [_check_sequence(adapter, answers[i], i, soft, n, interval, max_new_tokens, start, end)
                    for i in todo[first:first + chunk]]
            seqs = sorted((q for q in seqs if q is not None), key=lambda q: q.embeds.shape[1])
            for b in range(0, len(seqs), batch_size):
                found.update(_read_checks(adapter, seqs[b:b + batch_size], layer))
            bar.update(min(chunk, len(todo) - first))
    owner = [i for i in sorted(found) for _ in range(len(found[i][0]))]
    if not owner:
        return torch.empty(0, adapter.hidden_size), torch.empty(0, adapter.hidden_size), np.zeros(0, dtype=int)
    return (torch.cat([found[i][0] for i in sorted(found)]), torch.cat([found[i][1] for i in sorted(found)]),
            np.array(owner))


class _CheckSequence(NamedTuple):
    """One answer laid out for :func:`check_features`: embeds [1, S, d], positions [1, S] (or [3, 1, S]), who sees
    whom [S, S], and the indices of the check states (last soft token of each copy) and token states."""

    answer: int
    embeds: torch.Tensor
    positions: torch.Tensor
    sees: torch.Tensor
    checks: list[int]
    tokens: list[int]


def _check_sequence(adapter, ans: Answer, index: int, soft: torch.Tensor, n: int, interval: int, max_new_tokens: int,
                    start: bool, end: bool) -> _CheckSequence | None:
    ids = answer_ids(adapter, ans, max_new_tokens)
    points = check_points(len(ids), interval, max_new_tokens, start, end)
    if not points:
        return None
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
    return _CheckSequence(index, embeds, positions, sees, list(range(length + n - 1, size, n)),
                          [p + k - 1 for k in points])


def _read_checks(adapter, seqs: list[_CheckSequence], layer: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """One forward over sequences padded on the right (a padding position sees only itself): {answer: (check
    states [k, d], token states [k, d])}."""
    width = max(q.embeds.shape[1] for q in seqs)
    embeds = seqs[0].embeds.new_zeros(len(seqs), width, seqs[0].embeds.shape[-1])
    positions = seqs[0].positions.new_zeros(*seqs[0].positions.shape[:-2], len(seqs), width)
    sees = torch.eye(width, dtype=torch.bool).repeat(len(seqs), 1, 1)
    for b, q in enumerate(seqs):
        size = q.embeds.shape[1]
        embeds[b, :size] = q.embeds[0]
        positions[..., b, :size] = q.positions[..., 0, :]
        sees[b, :size, :size] = q.sees
    _, hid = adapter.forward(embeds, positions, None, layer, mask=sees)
    return {q.answer: (hid[b, q.checks].float().cpu(), hid[b, q.tokens].float().cpu()) for b, q in enumerate(seqs)}


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
