"""Pixel drawing shared by the card games: cards, card backs and text, as cached sprites.

Everything is drawn by this module (no third-party card images) with Pillow's bundled default
font, so the pixels depend neither on the working directory nor on the system's fonts. Sprites are
drawn once at 3x resolution, down-sampled for anti-aliasing and cached as ``uint8`` arrays; a
frame is then composed by plain numpy slice assignment, which is what keeps stepping fast.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FRAME_SIZE = 300
FELT = (31, 104, 58)
WHITE = (255, 255, 255)
BLACK = (20, 20, 20)
RED = (200, 30, 40)
GOLD = (245, 205, 70)

SUITS = ("spades", "hearts", "diamonds", "clubs")
RANKS = ("A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K")
_SUPERSAMPLE = 3


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled default font at ``size`` pixels (no file on disk needed)."""
    return ImageFont.load_default(size=size)


def _suit_polygon(draw: ImageDraw.ImageDraw, suit: str, cx: float, cy: float, r: float, fill) -> None:
    """Draw a suit symbol of radius ``r`` centred at (cx, cy)."""
    if suit == "diamonds":
        draw.polygon([(cx, cy - r), (cx + 0.72 * r, cy), (cx, cy + r), (cx - 0.72 * r, cy)], fill=fill)
    elif suit == "hearts":
        lobe = 0.52 * r
        draw.ellipse([cx - 2 * lobe + 0.05 * r, cy - 0.75 * r, cx + 0.05 * r, cy - 0.75 * r + 2 * lobe], fill=fill)
        draw.ellipse([cx - 0.05 * r, cy - 0.75 * r, cx + 2 * lobe - 0.05 * r, cy - 0.75 * r + 2 * lobe], fill=fill)
        draw.polygon([(cx - 0.98 * r, cy - 0.12 * r), (cx + 0.98 * r, cy - 0.12 * r), (cx, cy + r)], fill=fill)
    elif suit == "spades":
        lobe = 0.5 * r
        draw.polygon([(cx, cy - r), (cx + 0.95 * r, cy + 0.1 * r), (cx - 0.95 * r, cy + 0.1 * r)], fill=fill)
        draw.ellipse([cx - 2 * lobe + 0.02 * r, cy - 0.25 * r, cx + 0.02 * r, cy - 0.25 * r + 2 * lobe], fill=fill)
        draw.ellipse([cx - 0.02 * r, cy - 0.25 * r, cx + 2 * lobe - 0.02 * r, cy - 0.25 * r + 2 * lobe], fill=fill)
        draw.polygon([(cx, cy + 0.2 * r), (cx + 0.35 * r, cy + r), (cx - 0.35 * r, cy + r)], fill=fill)
    elif suit == "clubs":
        lobe = 0.42 * r
        for ox, oy in ((0.0, -0.52), (-0.5, 0.12), (0.5, 0.12)):
            x, y = cx + ox * r, cy + oy * r
            draw.ellipse([x - lobe, y - lobe, x + lobe, y + lobe], fill=fill)
        draw.polygon([(cx, cy), (cx + 0.35 * r, cy + r), (cx - 0.35 * r, cy + r)], fill=fill)
    else:
        raise ValueError(f"unknown suit {suit!r}; expected one of {SUITS}")


@lru_cache(maxsize=512)
def card_sprite(rank: str, suit: str, width: int, height: int, background: tuple[int, int, int] = FELT) -> np.ndarray:
    """A face-up card as an ``(height, width, 3)`` uint8 array on ``background``.

    Rank in the top-left and bottom-right corners with a small suit symbol, a large suit symbol
    (or the face letter) in the middle; hearts and diamonds red, spades and clubs black.
    """
    if rank not in RANKS:
        raise ValueError(f"unknown rank {rank!r}; expected one of {RANKS}")
    s = _SUPERSAMPLE
    w, h = width * s, height * s
    image = Image.new("RGB", (w, h), background)
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([0, 0, w - 1, h - 1], radius=int(0.1 * w), fill=WHITE, outline=(90, 90, 90), width=s)
    colour = RED if suit in ("hearts", "diamonds") else BLACK
    corner = font(int(0.26 * w))
    draw.text((0.08 * w, 0.04 * h), rank, font=corner, fill=colour)
    _suit_polygon(draw, suit, 0.08 * w + 0.1 * w, 0.04 * h + 0.3 * w + 0.12 * w, 0.09 * w, colour)
    if rank in ("J", "Q", "K"):
        draw.rectangle([0.26 * w, 0.26 * h, 0.74 * w, 0.74 * h], outline=colour, width=2 * s)
        big = font(int(0.42 * w))
        draw.text((0.5 * w, 0.5 * h), rank, font=big, fill=colour, anchor="mm")
    else:
        _suit_polygon(draw, suit, 0.5 * w, 0.53 * h, 0.22 * w, colour)
    # The bottom-right corner is the top-left one turned upside down, drawn on a transparent layer.
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    layer_draw = ImageDraw.Draw(layer)
    layer_draw.text((0.08 * w, 0.04 * h), rank, font=corner, fill=colour)
    _suit_polygon(layer_draw, suit, 0.08 * w + 0.1 * w, 0.04 * h + 0.3 * w + 0.12 * w, 0.09 * w, colour)
    image = Image.alpha_composite(image.convert("RGBA"), layer.rotate(180)).convert("RGB")
    sprite = np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.uint8)
    sprite.flags.writeable = False
    return sprite


@lru_cache(maxsize=16)
def card_back_sprite(width: int, height: int, background: tuple[int, int, int] = FELT) -> np.ndarray:
    """A face-down card (blue back with a lattice), same size conventions as :func:`card_sprite`."""
    s = _SUPERSAMPLE
    w, h = width * s, height * s
    image = Image.new("RGB", (w, h), background)
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([0, 0, w - 1, h - 1], radius=int(0.1 * w), fill=WHITE, outline=(90, 90, 90), width=s)
    inset = int(0.08 * w)
    draw.rounded_rectangle([inset, inset, w - inset, h - inset], radius=int(0.06 * w), fill=(40, 70, 160))
    step = max(4, int(0.12 * w))
    for offset in range(-h, w, step):
        draw.line([(inset + offset, inset), (inset + offset + h, inset + h)], fill=(90, 120, 200), width=s)
        draw.line([(inset + offset + h, inset), (inset + offset, inset + h)], fill=(90, 120, 200), width=s)
    draw.rectangle([0, 0, w - 1, inset - 1], fill=WHITE)
    draw.rectangle([0, h - inset, w - 1, h - 1], fill=WHITE)
    draw.rectangle([0, 0, inset - 1, h - 1], fill=WHITE)
    draw.rectangle([w - inset, 0, w - 1, h - 1], fill=WHITE)
    draw.rounded_rectangle([0, 0, w - 1, h - 1], radius=int(0.1 * w), outline=(90, 90, 90), width=s)
    sprite = np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.uint8)
    sprite.flags.writeable = False
    return sprite


@lru_cache(maxsize=1024)
def text_sprite(
    text: str, size: int, colour: tuple[int, int, int] = WHITE, background: tuple[int, int, int] = FELT
) -> np.ndarray:
    """``text`` rendered on an opaque ``background`` box as an ``(h, w, 3)`` uint8 array.

    The box height is the font's line height, so sprites of one size line up on a baseline.
    """
    f = font(size)
    ascent, descent = f.getmetrics()
    width = max(1, int(np.ceil(f.getlength(text)))) if text else 1
    image = Image.new("RGB", (width, ascent + descent), background)
    ImageDraw.Draw(image).text((0, 0), text, font=f, fill=colour)
    sprite = np.asarray(image, dtype=np.uint8)
    sprite.flags.writeable = False
    return sprite


def paste(canvas: np.ndarray, sprite: np.ndarray, x: int, y: int) -> None:
    """Copy ``sprite`` into ``canvas`` with its top-left corner at (x, y), clipped to the canvas."""
    height, width = canvas.shape[:2]
    h, w = sprite.shape[:2]
    if x >= 0 and y >= 0 and x + w <= width and y + h <= height:
        canvas[y : y + h, x : x + w] = sprite
        return
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + sprite.shape[1]), min(height, y + sprite.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    canvas[y0:y1, x0:x1] = sprite[y0 - y : y1 - y, x0 - x : x1 - x]


@lru_cache(maxsize=16)
def _filled(colour: tuple[int, int, int], size: int) -> np.ndarray:
    frame = np.empty((size, size, 3), dtype=np.uint8)
    frame[:, :] = np.array(colour, dtype=np.uint8)
    frame.flags.writeable = False
    return frame


def blank_frame(colour: tuple[int, int, int] = FELT, size: int = FRAME_SIZE) -> np.ndarray:
    """A fresh, writeable ``(size, size, 3)`` uint8 frame filled with ``colour``."""
    return _filled(colour, size).copy()


@lru_cache(maxsize=256)
def row_positions(count: int, item_width: int, left: int, right: int, gap: int) -> tuple[int, ...]:
    """x positions of ``count`` items laid out in [left, right], overlapping when they do not fit."""
    if count <= 0:
        return ()
    span = right - left
    step = item_width + gap
    if count > 1 and (count - 1) * step + item_width > span:
        step = (span - item_width) / (count - 1)
    total = (count - 1) * step + item_width
    start = left + (span - total) / 2
    return tuple(int(round(start + i * step)) for i in range(count))
