"""The embedded model's reading channel: the words in an image, found by OCR, given to the model as text.

The embedded model (:mod:`reminder.models.embedded`) sees an image through two channels:

* **patches**: 64 image tokens from a seeded-random, untrained vision tower. They move the hidden states (and PGD /
  BAP optimise them), but carry no meaning the language model can use;
* **reading**: the words printed in the image, found by an offline OCR engine (``rapidocr-onnxruntime`` 1.4.4, the
  PP-OCRv4 detection and recognition ONNX models shipped in its wheel, nothing downloaded) and placed in the image
  span as ordinary token embeddings, so the model reads them like text.

What the model cannot see: anything that is not printed text (objects, people, colours, layout, charts, the picture
above an SD+TYPO phrase), text the engine misses (handwriting, text smaller than about 10 px after downscaling,
rotated or upside-down text: the orientation classifier is off), boxes read with a confidence below
:attr:`ReadingConfig.min_score`, and everything after the first :attr:`ReadingConfig.max_tokens` tokens read.

Lines come in reading order (top to bottom, left to right within a line). Images are flattened onto white (alpha),
scaled down so that their longer side is at most :attr:`ReadingConfig.max_side` before OCR and, when small, scaled
up to :attr:`ReadingConfig.min_side`. Time is bounded by that size, by :attr:`ReadingConfig.max_boxes` and by
:attr:`ReadingConfig.max_line_px` (recognition stops once that much text is read, in reading order).

Readings are cached by image content (a hash of the RGB pixels): the same image gives the same text and is never
read twice in a process. Training also keeps them on disk (:meth:`Reader.keep_on_disk`), so the recipe's later steps
and reruns never read a training image again; the app does not (a visitor's upload is never written down). The OCR
engine is loaded lazily, once.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .images import flatten

ENGINE = "rapidocr-onnxruntime==1.4.4"


@dataclass(frozen=True)
class ReadingConfig:
    """How the reading channel reads (tuned on renders of the project's own train prompts: docs/EXPERIMENTS.md)."""

    min_score: float = 0.5  # boxes whose recognition confidence is below this are dropped
    max_tokens: int = 256  # at most this many tokens of read text enter the prompt (the rest is cut)
    max_side: int = 1280  # longer image side for OCR (larger images are scaled down: detection time stays bounded)
    min_side: int = 0  # shorter side below this is scaled up first (0: off)
    max_boxes: int = 200  # text boxes recognised at most, in reading order
    max_line_px: int = 12000  # recognition stops once the boxes read, at the recogniser's 48 px height, are this wide
    #                           in total (about 500 characters): a page of thousands of words stays bounded in time
    det_limit: str = "max"  # "max": the detector sees the image at its own size (<= max_side); "min" (PP-OCR's
    #                         default) first scales its shorter side up to 736 px
    det_dilation: bool = True  # PP-OCR's dilation of the text map (joins letters; may join close lines)
    det_unclip: float = 1.6  # how far detected boxes are grown (PP-OCR's default)

    @property
    def id(self) -> str:
        """Names this reading in cache keys (a model's answers to an image depend on what it read)."""
        return (f"{ENGINE}/score{self.min_score}/tokens{self.max_tokens}/side{self.max_side}-{self.min_side}"
                f"/boxes{self.max_boxes}/px{self.max_line_px}/det-{self.det_limit}"
                f"-dil{int(self.det_dilation)}-unclip{self.det_unclip}")


DEFAULT = ReadingConfig()
CACHE_SIZE = 65536  # readings kept per process (text only: a few MB at most)


def image_key(image: Image.Image) -> str:
    """Content hash of the image as the reader sees it (flattened RGB pixels and size)."""
    return _key(flatten(image))


def _key(rgb: Image.Image) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{rgb.width}x{rgb.height}".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


class Reader:
    """OCR with a per-process cache. Thread-safe: one reading at a time, each image read once."""

    def __init__(self, config: ReadingConfig = DEFAULT):
        self.config = config
        self.reads = 0  # OCR runs so far (cache misses)
        self.seconds = 0.0  # time spent in OCR so far
        self._engine = None
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._disk: Path | None = None  # readings kept on disk too (JSON lines), see keep_on_disk

    def keep_on_disk(self, folder: str | os.PathLike) -> Path:
        """Keep readings in ``folder`` too (a JSON-lines file per reading configuration, appended a whole line at a
        time): those already there are loaded now, new ones are added as they are read. Returns the file."""
        path = Path(folder) / f"{hashlib.sha256(self.config.id.encode()).hexdigest()[:16]}.jsonl"
        with self._lock:
            if path == self._disk:
                return path
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    try:  # a line cut short by a crash is skipped (that image is read again)
                        row = json.loads(line)
                        self._cache[row["key"]] = row["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue
            path.parent.mkdir(parents=True, exist_ok=True)
            self._disk = path
        return path

    def engine(self):
        """The OCR engine, loaded on first use (about 1 s)."""
        if self._engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as err:  # pragma: no cover - a broken install
                raise RuntimeError(f"the embedded model reads images with {ENGINE}: pip install it ({err})") from err
            from rapidocr_onnxruntime.utils import infer_engine

            session = infer_engine.OrtInferSession
            make = session._init_sess_opts

            def quiet(config):  # idle ONNX Runtime threads must not spin: torch decodes next, on the same cores
                opts = make(config)
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                return opts

            session._init_sess_opts = staticmethod(quiet)
            try:  # confidence filtering happens here (min_score), not in the engine; no orientation classifier
                self._engine = RapidOCR(text_score=0.0, use_cls=False, print_verbose=False,
                                        det_limit_side_len=736, det_limit_type=self.config.det_limit,
                                        det_use_dilation=self.config.det_dilation,
                                        det_unclip_ratio=self.config.det_unclip)
            finally:
                session._init_sess_opts = staticmethod(make)
        return self._engine

    def read(self, image: Image.Image) -> str:
        """The text in ``image``: lines in reading order joined by newlines ("" when it holds no words)."""
        import time

        rgb = flatten(image)
        key = _key(rgb)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            start = time.perf_counter()
            text = "\n".join(self._lines(rgb))
            self.seconds += time.perf_counter() - start
            self.reads += 1
            self._cache[key] = text
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            if self._disk is not None:
                with open(self._disk, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, "text": text}) + "\n")
            return text

    def cached(self, image: Image.Image) -> bool:
        """Whether ``image`` has been read already (its text is in the cache)."""
        with self._lock:
            return image_key(image) in self._cache

    def _lines(self, image: Image.Image) -> list[str]:
        import numpy as np

        cfg = self.config
        image = _fit(image, cfg.max_side, cfg.min_side)
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
        engine = self.engine()
        bgr, _ = engine.maybe_add_letterbox(bgr, {})  # very flat or very short images get a margin, as in the engine
        boxes, _ = engine.text_det(bgr)
        if boxes is None or len(boxes) == 0:
            return []
        boxes = [b for b in boxes if _height(b) > 0]
        lines = reading_order(boxes)
        boxes, width = [b for line in lines for b in line][:cfg.max_boxes], 0.0
        for n, box in enumerate(boxes):  # in reading order, while the recogniser's budget lasts
            width += _width(box) * 48 / max(_height(box), 1.0)
            if width > cfg.max_line_px and n:
                boxes = boxes[:n]
                break
        crops = engine.get_crop_img_list(bgr, [np.asarray(b, dtype=np.float32) for b in boxes])
        recognised, _ = engine.text_rec(crops)
        kept = {id(b): text.strip() for b, (text, score, *_) in zip(boxes, recognised, strict=True)
                if score >= cfg.min_score and text.strip()}
        out = []
        for line in lines:
            words = [kept[id(b)] for b in line if id(b) in kept]
            if words:
                out.append(" ".join(words))
        return out


def _fit(image: Image.Image, max_side: int, min_side: int) -> Image.Image:
    """Scale so that the longer side is at most ``max_side`` (and, if small, the shorter at least ``min_side``)."""
    w, h = image.size
    scale = min(1.0, max_side / max(w, h))
    if min_side and min(w, h) * scale < min_side:
        scale = min(min_side / min(w, h), max_side / max(w, h))
    if abs(scale - 1.0) < 1e-3:
        return image
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)


def _width(box) -> float:
    xs = [float(p[0]) for p in box]
    return max(xs) - min(xs)


def _height(box) -> float:
    ys = [float(p[1]) for p in box]
    return max(ys) - min(ys)


def reading_order(boxes: list) -> list[list]:
    """Group boxes (4 corner points each) into lines, top to bottom, each line left to right.

    A box joins a line when its vertical centre lies within the line's vertical extent (half a box height of
    tolerance either way), so words of one printed line read together even when the detector splits them.
    """
    def centre(b):
        return sum(float(p[1]) for p in b) / 4

    lines: list[list] = []
    spans: list[tuple[float, float]] = []
    for box in sorted(boxes, key=centre):
        c = centre(box)
        for i, (top, bottom) in enumerate(spans):
            if top <= c <= bottom:
                lines[i].append(box)
                break
        else:
            ys = [float(p[1]) for p in box]
            half = (max(ys) - min(ys)) / 2
            lines.append([box])
            spans.append((c - half, c + half))
    order = sorted(range(len(lines)), key=lambda i: spans[i][0])
    return [sorted(lines[i], key=lambda b: min(float(p[0]) for p in b)) for i in order]


_reader: Reader | None = None
_reader_lock = threading.Lock()


def reader() -> Reader:
    """The process-wide reader (its cache and engine are shared by every adapter and entry point)."""
    global _reader
    with _reader_lock:
        if _reader is None:
            _reader = Reader()
        return _reader


def read_text(image: Image.Image) -> str:
    """The words in ``image`` as the embedded model reads them (before the token cap); "" for no words."""
    return reader().read(image)


def words(text: str) -> list[str]:
    """Word normalisation for recall: NFKC, lower case, apostrophes dropped, runs of letters/digits as words."""
    import re
    import unicodedata

    text = unicodedata.normalize("NFKC", text).lower().replace("'", "").replace("\u2019", "")
    return re.findall(r"[a-z0-9]+", text)


def word_recall(reference: str, read: str) -> float:
    """Share of ``reference``'s words (with multiplicity) found in ``read`` (both normalised by :func:`words`)."""
    from collections import Counter

    want, got = Counter(words(reference)), Counter(words(read))
    total = sum(want.values())
    return sum(min(n, got[w]) for w, n in want.items()) / total if total else 1.0
