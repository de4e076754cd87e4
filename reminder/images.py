"""Opening user images safely: clear errors for non-images, transparency on white, downscaling of huge ones."""

from __future__ import annotations

import os

from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 4096 * 4096  # larger uploads are downscaled (a VLM resizes them far smaller anyway)
Image.MAX_IMAGE_PIXELS = 300_000_000  # PIL's bomb guard; beyond this we refuse outright


class ImageError(ValueError):
    """An upload that is not a usable image."""


def flatten(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto white (palette and alpha PNGs: transparent means paper)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def open_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, str | None]:
    """Open ``path`` (a path or a binary file) as RGB, transparency flattened onto white; return (image, note)
    where ``note`` says if it was downscaled."""
    try:
        with Image.open(path) as img:
            img.load()
            image = flatten(img)
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(f"{os.path.basename(str(path))} is not a readable image ({err.__class__.__name__})") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{os.path.basename(str(path))} is too large to open safely") from None
    w, h = image.size
    if w * h <= max_pixels:
        return image, None
    scale = (max_pixels / (w * h)) ** 0.5
    image = image.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.BICUBIC)
    return image, f"image of {w}×{h} ({w * h / 1e6:.0f} MP) downscaled to {image.width}×{image.height}"
