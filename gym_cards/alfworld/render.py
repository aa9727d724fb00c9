"""Offline picture of an ALFWorld world state, drawn from the PDDL facts.

Not a picture of the text: the image is built from the engine's facts (which receptacles
exist, which are open, where the agent stands, what it holds, what lies where and in which
state), with plain PIL drawing and PIL's bundled font, so it is deterministic and needs no
simulator. Layout (sizes scale with the image):

- top strip: the task sentence;
- room map: one row per receptacle type ("cabinet", "fridge", ...) with a numbered box per
  receptacle; closed receptacles are dark with a door line, open ones light with a swung door,
  the agent's receptacle has a thick red frame and a red marker, a receptacle holding a lamp
  that is on glows yellow;
- "here" panel: the receptacle the agent stands at and the objects it can see there (none when
  the receptacle is closed), each object a chip with its name and state badges
  (hot / cool / clean / on / sliced);
- "holding" panel: the object in the agent's hand with its badges.

Partial observability follows the text engine: contents show only for the receptacle the agent
is at, and only if it is open or has no door.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Badge text and colour per state predicate, in drawing order.
STATE_BADGES: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("ishot", "hot", (214, 48, 39)),
    ("iscool", "cool", (41, 121, 212)),
    ("isclean", "clean", (20, 160, 150)),
    ("istoggled", "on", (230, 170, 0)),  # the text engine tracks lamps by isToggled (its isOn is unreliable)
    ("issliced", "sliced", (120, 80, 160)),
)

BACKGROUND = (246, 244, 238)
INK = (30, 30, 30)
AGENT_RED = (220, 30, 30)
CLOSED_FILL = (92, 74, 60)
OPEN_FILL = (236, 222, 196)
PLAIN_FILL = (214, 226, 214)
LAMP_GLOW = (255, 221, 64)


@dataclass(frozen=True)
class WorldView:
    """What the picture needs, extracted from facts (display names such as "cabinet 3")."""

    receptacles: tuple[str, ...]
    openable: frozenset[str]
    opened: frozenset[str]
    agent_at: tuple[str, ...]
    contents: dict[str, tuple[str, ...]] = field(hash=False, compare=True)
    held: tuple[str, ...]
    states: dict[str, tuple[str, ...]] = field(hash=False, compare=True)
    """Object -> state predicates that hold (subset of STATE_BADGES' predicates)."""


def _natural_key(name: str) -> tuple[str, int]:
    kind, _, number = name.rpartition(" ")
    return (kind, int(number)) if number.isdigit() else (name, 0)


def world_view_from_facts(facts: frozenset[tuple[str, ...]]) -> WorldView:
    """Extract the drawable state from a set of facts."""
    receptacles = sorted({f[1] for f in facts if f[0] == "receptacletype"}, key=_natural_key)
    agent_locations = {f[2] for f in facts if f[0] == "atlocation"}
    agent_at = sorted(
        {f[1] for f in facts if f[0] == "receptacleatlocation" and f[2] in agent_locations}, key=_natural_key
    )
    contents: dict[str, list[str]] = {}
    for f in facts:
        if f[0] == "inreceptacle":
            contents.setdefault(f[2], []).append(f[1])
    state_names = {badge[0] for badge in STATE_BADGES}
    states: dict[str, list[str]] = {}
    for f in facts:
        if f[0] in state_names and len(f) == 2:
            states.setdefault(f[1], []).append(f[0])
    return WorldView(
        receptacles=tuple(receptacles),
        openable=frozenset(f[1] for f in facts if f[0] == "openable"),
        opened=frozenset(f[1] for f in facts if f[0] == "opened"),
        agent_at=tuple(agent_at),
        contents={r: tuple(sorted(objs, key=_natural_key)) for r, objs in contents.items()},
        held=tuple(sorted((f[2] for f in facts if f[0] == "holds"), key=_natural_key)),
        states={o: tuple(sorted(s)) for o, s in states.items()},
    )


def visible_contents(view: WorldView, receptacle: str) -> tuple[str, ...] | None:
    """Objects visible in a receptacle, or None when it is closed."""
    if receptacle in view.openable and receptacle not in view.opened:
        return None
    return view.contents.get(receptacle, ())


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, size))


def _text_width(font: ImageFont.ImageFont, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def _fit(font: ImageFont.ImageFont, text: str, width: int) -> str:
    """Shorten text with an ellipsis until it fits in ``width`` pixels."""
    if _text_width(font, text) <= width:
        return text
    while text and _text_width(font, text + "…") > width:
        text = text[:-1]
    return text + "…"


def object_colour(name: str) -> tuple[int, int, int]:
    """A stable colour per object type ("apple 2" -> the colour of "apple")."""
    kind = name.rpartition(" ")[0] or name
    hue = zlib.crc32(kind.encode()) % 360
    image = Image.new("HSV", (1, 1), (int(hue * 255 / 360), 110, 235))
    r, g, b = image.convert("RGB").getpixel((0, 0))
    return int(r), int(g), int(b)


def _draw_chip(draw: ImageDraw.ImageDraw, x: int, y: int, name: str, states: tuple[str, ...],
               font: ImageFont.ImageFont, badge_font: ImageFont.ImageFont, max_width: int, height: int) -> int:
    """Draw an object chip (name + state badges) at (x, y); return its width."""
    pad = max(2, height // 5)
    label = _fit(font, name, max_width - 2 * pad)
    badges = [(text, colour) for predicate, text, colour in STATE_BADGES if predicate in states]
    width = _text_width(font, label) + 2 * pad
    badge_widths = [_text_width(badge_font, text) + 2 * pad for text, _ in badges]
    width = min(max_width, width + sum(w + pad for w in badge_widths))
    draw.rounded_rectangle([x, y, x + width, y + height], radius=pad, fill=object_colour(name), outline=INK)
    draw.text((x + pad, y + height / 2), label, fill=INK, font=font, anchor="lm")
    bx = x + pad + _text_width(font, label) + pad
    inset = min(2, height // 2)  # chips are only a few pixels high at the smallest image sizes
    for (text, colour), w in zip(badges, badge_widths):
        if bx + w > x + width:
            break
        draw.rounded_rectangle([bx, y + inset, bx + w, y + height - inset], radius=pad, fill=colour)
        draw.text((bx + pad, y + height / 2), text, fill=(255, 255, 255), font=badge_font, anchor="lm")
        bx += w + pad
    return width


def _map_lines(view: WorldView, size: int) -> tuple[list[tuple[str, list[str]]], float, int, int, int]:
    """Split receptacles into map lines: (lines of (type label or "", names), line height,
    map top, label width, box width)."""
    s = size / 300.0
    header_h = round(18 * s)
    panel_h = round(92 * s)
    map_top, map_bottom = header_h + round(3 * s), size - panel_h - round(3 * s)
    label_w = round(74 * s)
    box_w = round(17 * s)
    per_line = max(1, (size - label_w - round(4 * s)) // box_w)
    rows: list[tuple[str, list[str]]] = []
    for name in view.receptacles:
        kind = name.rpartition(" ")[0] or name
        if rows and rows[-1][0] == kind:
            rows[-1][1].append(name)
        else:
            rows.append((kind, [name]))
    lines = [(kind if i == 0 else "", names[i:i + per_line]) for kind, names in rows
             for i in range(0, len(names), per_line)]
    line_h = min(round(16 * s), (map_bottom - map_top) / max(1, len(lines)))
    return lines, line_h, map_top, label_w, box_w


def receptacle_boxes(view: WorldView, size: int) -> dict[str, tuple[int, int, int, int]]:
    """Pixel box (x0, y0, x1, y1) of every receptacle on the room map."""
    lines, line_h, map_top, label_w, box_w = _map_lines(view, size)
    boxes = {}
    for row, (_kind, names) in enumerate(lines):
        y0 = map_top + row * line_h
        for col, name in enumerate(names):
            x0 = label_w + col * box_w
            left, top = x0 + 1, round(y0 + 1)
            # At least one pixel each way: a crowded scene at a small image_size gives lines and
            # columns under 3 pixels, and a box whose far edge lies before its near edge cannot be drawn.
            boxes[name] = (left, top, max(left, x0 + box_w - 2), max(top, round(y0 + line_h - 2)))
    return boxes


def map_row_labels(view: WorldView, size: int) -> dict[str, tuple[int, float]]:
    """Anchor (left, middle) of each receptacle type's label on the room map."""
    lines, line_h, map_top, _label_w, _box_w = _map_lines(view, size)
    return {kind: (round(3 * size / 300.0), map_top + row * line_h + line_h / 2)
            for row, (kind, _names) in enumerate(lines) if kind}


def panel_top(size: int) -> int:
    """First pixel row of the "here" panel (below the map)."""
    return size - round(92 * size / 300.0)


def holding_top(size: int) -> int:
    """First pixel row of the "holding" strip at the bottom."""
    return size - round(22 * size / 300.0)


def render_world(view: WorldView, task: str, size: int = 300) -> np.ndarray:
    """Draw a world state as an RGB ``uint8`` array of shape (size, size, 3)."""
    s = size / 300.0
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    header_font, label_font, number_font = _font(round(11 * s)), _font(round(9 * s)), _font(round(8 * s))
    chip_font, badge_font = _font(round(10 * s)), _font(round(8 * s))

    # Task strip.
    header_h = round(18 * s)
    draw.rectangle([0, 0, size, header_h], fill=(40, 52, 72))
    draw.text((round(4 * s), header_h / 2), _fit(header_font, "Task: " + task, size - round(8 * s)),
              fill=(255, 255, 255), font=header_font, anchor="lm")

    # Room map: one row (or more when long) of numbered boxes per receptacle type.
    lamp_on_at = {r for r, objs in view.contents.items() for o in objs if "istoggled" in view.states.get(o, ())}
    for kind, (x, y) in map_row_labels(view, size).items():
        draw.text((x, y), _fit(label_font, kind, round(69 * s)), fill=INK, font=label_font, anchor="lm")
    boxes = receptacle_boxes(view, size)
    glow = max(2, round(3 * s))
    for name in sorted(lamp_on_at & boxes.keys()):  # a lamp that is on lights up its receptacle
        box = boxes[name]
        draw.rectangle([box[0] - glow, box[1] - glow, box[2] + glow, box[3] + glow], fill=LAMP_GLOW)
    for name, box in boxes.items():
        closed = name in view.openable and name not in view.opened
        fill = CLOSED_FILL if closed else (OPEN_FILL if name in view.openable else PLAIN_FILL)
        here = name in view.agent_at
        draw.rectangle(box, fill=fill, outline=AGENT_RED if here else INK, width=max(1, round((2.5 if here else 1) * s)))
        if name in view.openable and not closed:  # a swung-open door on the right edge
            draw.line([box[2], box[1], box[2] + round(2 * s), box[1] + round(2 * s)], fill=INK, width=1)
        number = name.rpartition(" ")[2]
        draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), number,
                  fill=(255, 255, 255) if closed else INK, font=number_font, anchor="mm")
        if here:
            cx = (box[0] + box[2]) / 2
            draw.polygon([(cx - 3 * s, box[1] - 1), (cx + 3 * s, box[1] - 1), (cx, box[1] + 4 * s)], fill=AGENT_RED)

    # "Here" panel.
    top = panel_top(size)
    draw.line([0, top, size, top], fill=INK, width=max(1, round(s)))
    chip_h = round(15 * s)
    margin = round(4 * s)
    y = top + margin
    if view.agent_at:
        here = view.agent_at[0]
        seen = visible_contents(view, here)
        status = "closed" if seen is None else ("open" if here in view.openable else "")
        title = f"At {here}" + (f" ({status})" if status else "") + ":"
        draw.text((margin, y), title, fill=AGENT_RED, font=label_font)
        y += round(13 * s)
        x = margin
        items = [] if seen is None else list(seen)
        if seen is not None and not items:
            draw.text((margin, y), "nothing here", fill=INK, font=chip_font)
        for i, obj in enumerate(items):
            width = _draw_chip(draw, x, y, obj, view.states.get(obj, ()), chip_font, badge_font,
                               size - 2 * margin, chip_h)
            x += width + margin
            if i + 1 < len(items):
                next_w = _text_width(chip_font, items[i + 1]) + round(8 * s)
                if x + next_w > size - margin:
                    x, y = margin, y + chip_h + round(2 * s)
                    if y + chip_h > size - round(22 * s):
                        draw.text((x, y), f"+{len(items) - i - 1} more", fill=INK, font=chip_font)
                        break
    else:
        draw.text((margin, y), "In the middle of the room", fill=AGENT_RED, font=label_font)

    # Holding panel.
    hy = holding_top(size) + round(2 * s)
    draw.line([0, hy - round(2 * s), size, hy - round(2 * s)], fill=(180, 180, 180), width=1)
    draw.text((margin, hy + round(8 * s)), "Holding:", fill=INK, font=label_font, anchor="lm")
    if view.held:
        _draw_chip(draw, round(52 * s), hy + round(1 * s), view.held[0], view.states.get(view.held[0], ()),
                   chip_font, badge_font, size - round(56 * s), chip_h)
    else:
        draw.text((round(52 * s), hy + round(8 * s)), "nothing", fill=INK, font=chip_font, anchor="lm")
    return np.asarray(image, dtype=np.uint8)
