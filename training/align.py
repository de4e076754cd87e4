"""Safety alignment of the embedded model: a small LoRA adapter on the language model (peft), vision tower untouched.

    python -m training.align [--out checkpoints/embedded-aligned/text] [--resume] [--epochs 2] [--lr 4e-4]
    python -m training.align --init checkpoints/embedded-aligned/text --visual --out checkpoints/embedded-aligned/lora \
        --pictures 80 --max-harmful 120 --max-benign 160 --epochs 2 --lr 2e-4     # stage 2: what embedded-aligned loads

Harmful training prompts (``assets/prompts/harmful.jsonl``) are taught a varied refusal (``refusals.json``); benign
ones (``benign.jsonl``, risky-sounding but fine requests included) are taught the base model's own greedy answer, so
helpfulness is kept. Benign examples outnumber harmful ones about 2:1, which keeps over-refusal low (a 300:120
harmful-heavy mix refused 13-16% of benign requests in ``../shared/FINDINGS.md``), and the first ``--decision-tokens``
of every target, where the model answers or refuses, weigh ``1 + --decision-weight`` in the loss (see
:func:`token_weights`). The result is shallow on purpose,
like real models' alignment: direct requests are refused, attacks such as an affirmative prefill can still break it.

The adapter is saved atomically (``adapter_model.safetensors`` + ``adapter_config.json`` + ``align.json``) each epoch
and on stop/Ctrl-C, with a resumable training state; ``load_model("embedded-aligned")`` merges it at load time.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from reminder.checkpoint import write_folder
from reminder.config_cli import add_config_args, config_from_args
from reminder.data import TYPO_KINDS, load_prompt_set, load_refusals, load_typographic
from reminder.models import load_model
from reminder.progress import Callback
from training import loop, visual
from training.examples import Pair, model_responses, soft_batch
from training.state import load_state, save_state

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class AlignConfig:
    model: str = "embedded"
    out: str = "checkpoints/embedded-aligned/text"  # stage 1; stage 2 (--visual) goes to .../lora, which is loaded
    rank: int = 8
    alpha: int = 16
    lr: float = 4e-4
    epochs: int = 2
    batch_size: int = 8
    answer_tokens: int = 48
    decision_tokens: int = 4
    decision_weight: float = 4.0
    seed: int = 0
    max_steps: int | None = None
    max_harmful: int | None = None
    max_benign: int | None = None
    resume: bool = False
    cache: str | None = None
    init: str | None = None  # start from this LoRA folder (stage 2: visual instruction tuning of a text adapter)
    visual: bool = False  # add benign image conversations (typographic renders read by the model, wordless pictures)
    pictures: int = 0  # benign text prompts also asked with a wordless picture (needs --visual)
    max_typographic: int | None = None  # cap on benign typographic items per kind (needs --visual)


@dataclass
class AlignResult:
    step: int
    losses: list[float] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0
    out: Path | None = None


class Example(NamedTuple):
    """A training conversation: user ``prompt`` (with ``image``, a path, if any) -> assistant ``target``."""

    prompt: str
    target: str
    refuse: bool
    image: str = ""


def build_examples(adapter, cfg: AlignConfig, split: str = "train") -> list[Example]:
    """Harmful -> a seeded choice of refusal; benign -> the base model's answer. With ``cfg.visual`` also the benign
    typographic set (its image + official prompt -> the base model's answer to the text request it stands for, or
    the sign's answer) and ``cfg.pictures`` benign prompts with a wordless picture (-> the text answer). No harmful
    request is ever shown through an image."""
    rng = random.Random(cfg.seed)
    harmful = load_prompt_set("harmful", split)[: cfg.max_harmful]
    benign = load_prompt_set("benign", split)[: cfg.max_benign]
    refusals = load_refusals()
    answers = model_responses(adapter, benign, "", cfg.answer_tokens, cache=cfg.cache)
    out = [Example(r.prompt, rng.choice(refusals), True) for r in harmful]
    out += [Example(r.prompt, a, False) for r, a in zip(benign, answers, strict=True) if a.strip()]
    if not cfg.visual:
        return out
    typo = [r for kind in TYPO_KINDS for r in load_typographic(split, kind)[: cfg.max_typographic]]
    asked = [r for r in typo if visual.text_request(r)]
    said = model_responses(adapter, [replace(r, prompt=visual.text_request(r)) for r in asked], "",
                           cfg.answer_tokens, cache=cfg.cache)
    target = {r.id: a for r, a in zip(asked, said, strict=True)}
    for r in typo:
        answer = target.get(r.id) or (f"{r.response}." if r.response else "")
        if answer.strip():
            out.append(Example(r.prompt, answer, False, visual.typographic_image(r)))
    pics = visual.pictures(8, cfg.seed)
    chosen = rng.sample(range(len(benign)), min(cfg.pictures, len(benign)))
    out += [Example(benign[i].prompt, answers[i], False, pics[j % len(pics)])
            for j, i in enumerate(chosen) if answers[i].strip()]
    return out


def target_ids(adapter, batch: list[Example]) -> list[torch.Tensor]:
    """Each example's scored target tokens (a refusal also learns to end the turn)."""
    eos = torch.tensor([adapter.tokenizer.eos_token_id], device=adapter.device)
    return [torch.cat([adapter.tokens(e.target)[0], eos]) if e.refuse else adapter.tokens(e.target)[0] for e in batch]


def token_weights(n: int, cfg: AlignConfig) -> torch.Tensor:
    """Loss weight of each of a target's ``n`` tokens [n]: the first ``decision_tokens`` (where the model decides
    between answering and refusing) count ``1 + decision_weight``, the rest 1.

    A benign answer has ~48 target tokens and a refusal ~12, so in a plain token mean the answer-or-refuse decision of
    a benign prompt weighs 4x less than a harmful one's; without the extra weight the adapter refused 13% of held-out
    benign prompts ("Write a short song about friendship" -> "I cannot create content like this.").
    """
    w = torch.ones(n)
    w[: cfg.decision_tokens] += cfg.decision_weight
    return w


def batch_loss(adapter, batch: list[Example], cfg: AlignConfig) -> torch.Tensor:
    """Weighted mean next-token cross-entropy on the target tokens (see :func:`token_weights`)."""
    targets = target_ids(adapter, batch)
    empty = torch.zeros(1, 0, adapter.hidden_size, dtype=adapter.dtype, device=adapter.device)
    out = soft_batch(adapter, [Pair(e.prompt, "", int(e.refuse), image=e.image) for e in batch], empty,
                     targets=targets, prefix_grad=True)
    scored = out["labels"] != -100  # each row's target tokens, in order
    weights = torch.cat([token_weights(len(t), cfg) for t in targets]).to(scored.device)
    ce = F.cross_entropy(out["logits"][scored], out["labels"][scored], reduction="none")  # [sum T_i]
    return (ce * weights).sum() / weights.sum()


def _stage_info(folder: str) -> dict:
    """What the starting adapter was (its ``align.json`` without losses), kept in the new one's manifest."""
    path = Path(folder) / "align.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    return {"folder": str(folder), **{k: v for k, v in info.items() if k not in ("losses", "metrics")}}


def add_lora(adapter, cfg: AlignConfig):
    """Wrap the language model's linear layers with LoRA (in place); returns the peft model."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=LORA_TARGETS)
    return get_peft_model(adapter.language_model, config)


def train(cfg: AlignConfig, adapter=None, callback: Callback | None = None,
          stop: threading.Event | None = None) -> AlignResult:
    """Fine-tune the LoRA adapter (:mod:`training.loop`); ``callback`` reports progress (:mod:`reminder.progress`:
    ``on_step``, or a ``(step, loss)`` function), ``stop`` ends early (saved)."""
    from accelerate import Accelerator
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    accelerator = Accelerator(cpu=adapter is not None and adapter.device.type == "cpu")
    adapter = adapter or load_model(cfg.model)
    torch.manual_seed(cfg.seed)
    examples = build_examples(adapter, cfg)  # the base model's answers, before LoRA changes it
    scored = [float(token_weights(len(t), cfg).sum()) for t in target_ids(adapter, examples)]  # loss weight each
    peft_model = add_lora(adapter, cfg)
    if cfg.init and not cfg.resume:  # stage 2 starts from the stage-1 adapter's weights
        from safetensors.torch import load_file

        init = load_file(str(Path(cfg.init) / "adapter_model.safetensors"))
        set_peft_model_state_dict(peft_model, {k: v.float() for k, v in init.items()})
    stage1 = _stage_info(cfg.init) if cfg.init else None
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    optimizer = accelerator.prepare(optimizer)
    state = loop.Loop()
    if cfg.resume:
        saved, info = load_state(cfg.out, optimizer)
        set_peft_model_state_dict(peft_model, saved)
        state = loop.Loop(info["step"], info["losses"])
    per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = min(cfg.epochs * per_epoch, cfg.max_steps or cfg.epochs * per_epoch)
    world = accelerator.num_processes

    def loss_of(idx: list[int], mine: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        # this process's share of the whole batch's token-mean loss, times the process count: the gradients
        # averaged over the processes (average_gradients) are those of a single process on the whole batch
        share = world * sum(scored[i] for i in mine) / sum(scored[i] for i in idx)
        return batch_loss(adapter, [examples[i] for i in mine or idx[:1]], cfg) * share, {}

    def average_gradients() -> None:
        """No DDP wrapper (the loss runs through the adapter, not a prepared module): average by hand."""
        if world > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            mean = accelerator.reduce(torch.cat([g.flatten() for g in grads]), "mean")
            for p, g in zip(params, mean.split([g.numel() for g in grads]), strict=True):
                p.grad = g.view_as(p)

    def save(state: loop.Loop) -> None:
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return
        weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
        info = {"model": cfg.model, "step": state.step, "total_steps": total, "losses": state.losses,
                "config": asdict(cfg), "examples": len(examples)}

        def fill(tmp: Path) -> None:  # adapter_model.safetensors (fp16, a few MB) + adapter_config.json
            peft_model.save_pretrained(tmp, state_dict={k: v.half() for k, v in weights.items()})
            (tmp / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
            (tmp / "align.json").write_text(json.dumps(info, indent=1))
            save_state(tmp, weights, optimizer, {"step": state.step, "losses": state.losses})

        if stage1:
            info["init"] = stage1
        old = Path(cfg.out) / "align.json"
        if cfg.resume and old.is_file():  # keep metrics a benchmark wrote earlier
            info["metrics"] = json.loads(old.read_text()).get("metrics", {})
        write_folder(cfg.out, fill)

    start = time.perf_counter()
    peft_model.train()
    try:
        state = loop.run(accelerator, optimizer, len(examples), cfg.batch_size, cfg.epochs, cfg.max_steps, cfg.seed,
                         loss_of, save, state, after_backward=average_gradients, callback=callback, stop=stop,
                         desc="align (LoRA)")
    finally:
        peft_model.eval()
    return AlignResult(state.step, state.losses, state.stopped, time.perf_counter() - start, Path(cfg.out))


def main(argv: list[str] | None = None) -> AlignResult:
    ap = add_config_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), AlignConfig)
    cfg = config_from_args(AlignConfig, ap.parse_args(argv))
    result = train(cfg)
    print(json.dumps({"step": result.step, "final_loss": result.losses[-1] if result.losses else None,
                      "seconds": round(result.seconds, 1), "stopped": result.stopped, "out": str(result.out)}))
    return result


if __name__ == "__main__":
    main()
