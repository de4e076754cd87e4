"""PGD on the image (ImgJP, Niu et al. 2024): an L-inf bounded perturbation that makes the model answer the targets.

The image is optimised in [0, 1] at the model's input size (``adapter.image_tensor``) and goes through the
differentiable preprocessing (``adapter.pixels_from_image``). Each step takes a signed-gradient step of size
``alpha``, projects onto the L-inf ball of radius ``eps`` around the clean image and clamps to [0, 1]. With
``universal`` the loss is the mean over all (prompt, target) pairs: one image for many requests. The result is
saved as an 8-bit PNG at the model's input size, and the loss is re-evaluated on the quantised image.

A model with a reading channel (the embedded one, :mod:`reminder.reading`) also reads the words in the image. OCR is
not differentiable: the text read from the starting image is held fixed during optimisation (only the patch tokens
change). The saved PNG is then read again (``image_text_saved``, ``reading_changed``) and ``loss_after_png`` is
measured through the path the app takes: PNG bytes -> ``open_image`` -> ``adapter.build`` (reading included) ->
the processor's pixels.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import asdict, dataclass, field

import torch
from PIL import Image

from attacks.common import (
    AttackResult,
    add_common_args,
    cli_command,
    emit,
    parse_fraction,
    print_progress,
    save_image_result,
    target_loss,
)
from reminder.config_cli import add_config_args, config_from_args
from reminder.models.base import VLMAdapter
from reminder.progress import Callback, Progress, stopped


@dataclass
class PGDConfig:
    """PGD knobs. Cost per step: one forward + backward per (prompt, target) pair."""

    eps: float = 16 / 255
    alpha: float = 1 / 255
    steps: int = 20
    universal: bool = True  # False: exactly one prompt
    seed: int = 0


@dataclass
class PGDResult(AttackResult):
    """``image``: the adversarial image (8-bit, model input size); ``loss_after_quantisation``: its mean target loss."""

    image: Image.Image | None = field(default=None, metadata={"json": False})
    initial_loss: float = float("inf")
    loss_after_quantisation: float = float("inf")
    linf: float = 0.0  # max |adv - clean| of the saved image, in [0, 1] units
    prompts: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    image_text: str | None = None  # what the model read in the starting image (held fixed; None: no reading channel)
    image_text_saved: str | None = None  # what it reads in the saved PNG
    reading_changed: bool | None = None  # whether the two readings differ
    loss_after_png: float = float("inf")  # mean target loss on the saved PNG, built as the app builds it


def png_round_trip(image: Image.Image) -> Image.Image:
    """``image`` saved as PNG and opened again the way the app opens an upload."""
    import io

    from reminder.images import open_image

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    buf.seek(0)
    return open_image(buf)[0]


def app_path_loss(adapter: VLMAdapter, prompts: list[str], targets: list[str],
                  image: Image.Image) -> tuple[float, str | None]:
    """(mean target loss, what the model read) for ``image`` given as the app gives it: built afresh (reading
    included) with the processor's own pixels."""
    built = [adapter.build(p, image) for p in prompts]
    loss = torch.stack([target_loss(adapter, b, t) for b, t in zip(built, targets, strict=True)]).mean()
    return float(loss), built[0].image_text


def to_pil(x: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] -> 8-bit RGB image (rounded)."""
    arr = x.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def base_image(size: int = 256, seed: int = 0) -> Image.Image:
    """A plain seeded starting image: a smooth colour gradient with mild noise, ``size`` x ``size``."""
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    colour = torch.rand(3, 2, generator=gen)  # per channel: weight of the vertical / horizontal ramp
    x = (colour[:, :1, None] * ramp[None, :, None] + colour[:, 1:, None] * ramp[None, None, :]) / 2 + 0.25
    return to_pil(x + 0.03 * torch.randn(3, size, size, generator=gen))


def run(adapter: VLMAdapter, prompts: list[str], targets: list[str], image: Image.Image,
        config: PGDConfig | None = None, callback: Callback | None = None,
        stop: threading.Event | None = None) -> PGDResult:
    """Optimise ``image`` so the model answers each prompt with its target (one target may serve all prompts);
    ``callback``/``stop``: :mod:`reminder.progress` (a plain ``(step, loss)`` function serves too)."""
    progress = Progress.of(callback)
    config = config or PGDConfig()
    if not prompts:
        raise ValueError("PGD needs at least one prompt")
    if len(targets) == 1:
        targets = targets * len(prompts)
    if len(targets) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets (give one, or one per prompt)")
    if not config.universal and len(prompts) != 1:
        raise ValueError("a non-universal PGD attack takes exactly one prompt (set universal=True for several)")
    if not 0 < config.eps <= 1 or not 0 < config.alpha <= 1:
        raise ValueError("eps and alpha must be in (0, 1] (pixel units; e.g. 16/255)")
    torch.manual_seed(config.seed)
    built = [adapter.build(p, image) for p in prompts]
    clean = adapter.image_tensor(image, built[0])

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([target_loss(adapter, b, t, adapter.pixels_from_image(x, b))
                            for b, t in zip(built, targets, strict=True)]).mean()

    x = clean.clone()
    best, best_loss = clean.clone(), float("inf")
    result = PGDResult(config=asdict(config), seed=config.seed, prompts=list(prompts), targets=list(targets))
    start = time.perf_counter()
    for step in range(config.steps):
        if stopped(stop):
            result.stopped = True
            break
        x.requires_grad_(True)
        loss = loss_of(x)
        (grad,) = torch.autograd.grad(loss, x)
        value = float(loss.detach())
        if step == 0:
            result.initial_loss = value
        if value < best_loss:
            best, best_loss = x.detach().clone(), value
        with torch.no_grad():
            x = x.detach() - config.alpha * grad.sign()
            x = torch.min(torch.max(x, clean - config.eps), clean + config.eps).clamp(0, 1)
        result.losses.append(value)
        progress.on_step(step, value, {})
    result.seconds_per_step = (time.perf_counter() - start) / max(1, len(result.losses))
    with torch.no_grad():  # the last update has not been scored yet
        last = float(loss_of(x))
        if last < best_loss:
            best, best_loss = x, last
        result.image = to_pil(best)
        quantised = adapter.image_tensor(result.image, built[0])
        result.best_loss = best_loss
        result.loss_after_quantisation = float(loss_of(quantised))
        result.linf = float((quantised - clean).abs().max())
        result.image_text = built[0].image_text
        result.loss_after_png, result.image_text_saved = app_path_loss(
            adapter, prompts, targets, png_round_trip(result.image))
        if result.image_text is not None:
            result.reading_changed = result.image_text != result.image_text_saved
    return result


FRACTIONS = {"eps": parse_fraction, "alpha": parse_fraction}  # flags in pixel units, e.g. 16/255
HELP = {"eps": "L-inf radius, e.g. 16/255", "alpha": "step size, e.g. 1/255", "steps": "optimisation steps"}


def main(argv: list[str] | None = None) -> PGDResult:
    parser = add_common_args(argparse.ArgumentParser(description="PGD adversarial image (ImgJP)"))
    add_config_args(parser, PGDConfig, skip=("universal",), parsers=FRACTIONS, help=HELP)
    parser.add_argument("--image", help="clean base image (default: a seeded plain image, base_image(256, seed))")
    args = parser.parse_args(argv)
    if not args.out:
        parser.error("--out (the adversarial PNG) is required")
    from reminder import load_model
    from reminder.images import open_image

    adapter = load_model(args.model)
    config = config_from_args(PGDConfig, args, universal=len(args.prompt) > 1)
    image = open_image(args.image)[0] if args.image else base_image(seed=args.seed)
    result = run(adapter, args.prompt, args.target, image, config, callback=print_progress)
    result.command = cli_command("attacks.pgd", argv)
    save_image_result(result, args.out)
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
