"""Where the reminder recipe's time went, and what each change saves: the old and the new way, in one process.

    python -m benchmarks.recipe_speed [--model embedded-aligned] [--n 48] [--max-new-tokens 64] [--batch-size 8]

On ``--n`` training conversations of the recipe (text and image ones in turn, the train split), each piece is timed
the way the recipe ran before and the way it runs now:

1. **answers**: greedy decoding in batches of prompts of one token length (before: most batches held one or two
   prompts) against batches padded on the left (:func:`reminder.batching.generate_batch`), which also read every
   answer's check states on the way (:class:`reminder.batching.CheckReading`); the tokens must be the same; and
   padded batches whose ended rows stay to the end (``drop_ended=False``, the recipe's first run) against rows
   leaving the batch once they end;
2. **check states**: reading the answers at their check points afterwards (:func:`training.features.check_features`,
   one answer per forward as before, and batched) against the extra time of reading them while decoding;
3. **a SAPT step**: forward and backward over whole conversations + soft prompt + targets (before) against the
   conversations run once without gradient into a KV cache and only the soft prompt and targets with it
   (:func:`training.examples.soft_batch`); the soft prompt's gradients must agree;
4. **bfloat16 products** (``training.recipe.autocast``, where the CPU multiplies bfloat16 natively): the answers,
   the check states read afterwards (batched) and the cached SAPT step again under ``torch.autocast``; how many
   answers keep every token, how far the check states move, and the gradients' cosine.

Printed: seconds of each, and the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
import torch.nn.functional as F

from reminder import GenerationConfig, load_model
from reminder.batching import CheckReading, batches, generate_batch
from reminder.soft_prompt import SoftPrompt
from training.examples import Answer, Pair, conversations, soft_batch, training_image
from training.features import check_features
from training.recipe import autocast


def _encode(adapter, convs):
    with torch.inference_mode():
        return [adapter.encode(adapter.build(c.record.prompt, training_image(c.image), prefill=c.prefill))
                for c in convs]


def whole_sequence_batch(adapter, pairs: list[Pair], soft: torch.Tensor, targets: list[torch.Tensor]):
    """The SAPT batch as it ran before: prompt + partial + soft prompt + target, right-padded, one forward with
    gradient through every position. Returns (logits [B, T, V], labels [B, T]) over the targets."""
    n = soft.shape[1]
    rows = [adapter.encode(adapter.build(p.prompt, training_image(p.image), prefill=p.partial)) for p in pairs]
    t_max = max(len(t) for t in targets)
    width = max(len(r) for r in rows) + n + t_max
    embeds, positions = [], []
    labels = torch.full((len(rows), t_max), -100, dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, targets, strict=True)):
        filler = torch.zeros(width - len(r) - n - len(t), dtype=torch.long)
        e, p = adapter.extend(r, soft, torch.cat([t, filler])[None])
        embeds.append(e[0])
        positions.append(p)
        labels[i, :len(t)] = t
    last, _ = adapter.forward(torch.stack(embeds), torch.cat(positions, dim=-2))
    states = torch.stack([last[i, len(r) + n - 1:len(r) + n - 1 + t_max] for i, r in enumerate(rows)])
    return adapter.logits(states), labels


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded-aligned")
    ap.add_argument("--n", type=int, default=48, help="training conversations (half text, half with an image)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8, help="SAPT examples per step, check-state batches")
    a = ap.parse_args(argv)
    adapter = load_model(a.model)
    every = conversations("train", {"harmful": None, "benign": None}, typographic=None)
    text = [c for c in every if not c.image][:: 7][: a.n // 2]
    image = [c for c in every if c.image][:: 5][: a.n - len(text)]
    convs = [c for pair in zip(text, image, strict=False) for c in pair]
    soft = SoftPrompt.from_text(adapter)(adapter.dtype, adapter.device).detach()
    cfg = GenerationConfig(max_new_tokens=a.max_new_tokens)
    encoded = _encode(adapter, convs)
    out: dict = {"conversations": len(convs), "max_new_tokens": a.max_new_tokens}

    start = time.perf_counter()  # 1. answers: equal-length batches (before) vs padded batches reading checks
    groups = batches([len(e) for e in encoded], 64)
    old = {}
    for idx in groups:
        old.update(zip(idx, generate_batch(adapter, [encoded[i] for i in idx], config=cfg, batch_size=64),
                       strict=True))
    out["answers_equal_length_s"] = time.perf_counter() - start
    out["equal_length_batches"] = len(groups)
    start = time.perf_counter()
    new = generate_batch(adapter, encoded, config=cfg, batch_size=64, reading=CheckReading(soft))
    out["answers_padded_reading_s"] = time.perf_counter() - start
    start = time.perf_counter()
    kept = generate_batch(adapter, encoded, config=cfg, batch_size=64, reading=CheckReading(soft), drop_ended=False)
    out["answers_padded_reading_keep_ended_s"] = time.perf_counter() - start
    start = time.perf_counter()
    generate_batch(adapter, encoded, config=cfg, batch_size=64)
    out["answers_padded_s"] = time.perf_counter() - start
    out["same_tokens_keep_ended"] = sum(k.token_ids == g.token_ids for k, g in zip(kept, new, strict=True))
    fast = autocast("bfloat16", adapter)
    start = time.perf_counter()
    with fast:
        bf16 = generate_batch(adapter, encoded, config=cfg, batch_size=64, reading=CheckReading(soft))
    out["answers_padded_reading_bf16_s"] = time.perf_counter() - start
    out["same_tokens_bf16"] = sum(b.token_ids == g.token_ids for b, g in zip(bf16, new, strict=True))
    out["ended_before_max"] = sum(len(g.token_ids) < a.max_new_tokens for g in new)
    out["same_tokens"] = sum(old[i].token_ids == g.token_ids for i, g in enumerate(new))

    answers = [Answer(c.record, c.prefill, c.prefill + g.text, c.unsafe, c.image)
               for c, g in zip(convs, new, strict=True)]
    states = {}
    for size, compute, name in ((1, None, "b1"), (a.batch_size, None, f"b{a.batch_size}"),
                                (a.batch_size, fast, f"b{a.batch_size}_bf16")):
        start = time.perf_counter()  # 2. check states read afterwards, one answer per forward, batched (, bf16)
        with compute or contextlib.nullcontext():
            states[name] = check_features(adapter, answers, soft.clone() + 0, 16, a.max_new_tokens, batch_size=size)[0]
        out[f"check_states_after_{name}_s"] = time.perf_counter() - start
    exact, moved = states[f"b{a.batch_size}"], states[f"b{a.batch_size}_bf16"]
    out["check_states_bf16_rel_diff"] = float((moved - exact).norm(dim=-1).mean() / exact.norm(dim=-1).mean())
    out["check_states_while_decoding_s"] = out["answers_padded_reading_s"] - out["answers_padded_s"]

    pairs = [Pair(x.record.prompt, x.response[: len(x.response) // 2], x.unsafe, image=x.image) for x in answers]
    targets = [adapter.tokens(" I'm sorry, but I can't help with that.")[0] for _ in pairs]
    grads = {}
    for name in ("whole", "cached", "cached_bf16"):  # 3. a SAPT step: whole conversations with gradient vs
        start = time.perf_counter()  # cached prefix (4. and in bfloat16 products)
        for i in range(0, len(pairs), a.batch_size):
            s = soft.clone().requires_grad_(True)
            b, t = pairs[i:i + a.batch_size], targets[i:i + a.batch_size]
            with fast if name.endswith("bf16") else contextlib.nullcontext():
                if name == "whole":
                    logits, labels = whole_sequence_batch(adapter, b, s, t)
                else:
                    o = soft_batch(adapter, b, s, -1, t)
                    logits, labels = o["logits"], o["labels"]
                loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
            grads.setdefault(name, []).append(torch.autograd.grad(loss, s)[0])
        out[f"sapt_{name}_s"] = time.perf_counter() - start
    out["sapt_grad_norm"] = max(float(g.norm()) for g in grads["whole"])
    out["sapt_grad_max_diff"] = max(float((x - y).abs().max()) for x, y in zip(grads["whole"], grads["cached"],
                                                                                strict=True))
    out["sapt_grad_cos_bf16"] = min(float(F.cosine_similarity(x.flatten(), y.flatten(), dim=0))
                                    for x, y in zip(grads["cached"], grads["cached_bf16"], strict=True))
    out["speedup_bf16_answers"] = out["answers_padded_reading_s"] / out["answers_padded_reading_bf16_s"]
    out["speedup_bf16_check_states"] = (out[f"check_states_after_b{a.batch_size}_s"]
                                        / out[f"check_states_after_b{a.batch_size}_bf16_s"])
    out["speedup_bf16_sapt_step"] = out["sapt_cached_s"] / out["sapt_cached_bf16_s"]
    out["speedup_answers"] = out["answers_equal_length_s"] / out["answers_padded_reading_s"]
    out["speedup_drop_ended"] = out["answers_padded_reading_keep_ended_s"] / out["answers_padded_reading_s"]
    extra = out["check_states_while_decoding_s"]  # within the noise of two decodings when <= 0
    out["speedup_check_states"] = out["check_states_after_b1_s"] / extra if extra > 0 else None
    out["speedup_sapt_step"] = out["sapt_whole_s"] / out["sapt_cached_s"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}, indent=1))
    return out


if __name__ == "__main__":
    main()
