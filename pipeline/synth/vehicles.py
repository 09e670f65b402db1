"""Procedural vehicle crops: paint colour, body type silhouette and a brand emblem.

A vehicle is drawn from the front, the rear or the side. Front and rear views stack horizontal
bands whose proportions depend on the type (roof, glass, bonnet, face with grille and lights,
bumper, wheels); side views use a per-type profile. Each brand has its own emblem, a small
procedural logo derived from a hash of its name (outer shape, inner mark, two colours), placed on
the grille or the tail and on the wheel hubs, plus weaker brand habits (grille and headlight
style) that several brands share. The "web" style (train/val) is a clean, well-lit photo; the
"surveillance" style (test) is an overhead camera: roof visible, darker, greyer, blurrier.

Randomness: the caller's ``rng`` only seeds independent streams, so the colour, the type or the
brand can change while the rest of the picture stays put.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from pipeline.schema import VEHICLE_BRANDS, VEHICLE_COLORS, VEHICLE_TYPES
from pipeline.synth.drawing import (
    RGB, desaturate, finish, jitter, occlude, pick, plain_background, shade, street_background,
)

SCALE = 2  # draw at twice the output size
STYLES = ("web", "surveillance")
_STREAMS = ("layout", "paint", "brand", "camera", "background")

#: Nominal paint per colour name; each car varies around it (hue, value, lighting).
PAINT: dict[str, RGB] = {
    "black": (28, 28, 32), "blue": (35, 75, 165), "brown": (105, 68, 40), "green": (40, 115, 60),
    "grey": (125, 127, 132), "orange": (230, 115, 30), "pink": (230, 140, 170),
    "purple": (105, 50, 135), "red": (185, 28, 35), "white": (232, 232, 230), "yellow": (230, 195, 40),
}
GLASS: RGB = (38, 46, 58)

# Front/rear bands as fractions of the body height, top to bottom, and the body's height/width.
# (height/width, greenhouse top width, glass, bonnet, face, bumper, wheels)
_FRONT: dict[str, tuple[float, float, float, float, float, float, float]] = {
    "Sedan": (0.6, 0.68, 0.28, 0.2, 0.26, 0.16, 0.1),
    "SUV": (0.8, 0.8, 0.28, 0.15, 0.31, 0.16, 0.1),
    "Minivan": (0.88, 0.82, 0.38, 0.12, 0.28, 0.14, 0.08),
    "Microbus": (1.0, 0.93, 0.34, 0.03, 0.42, 0.14, 0.07),
    "Bus": (1.1, 0.98, 0.47, 0.0, 0.34, 0.12, 0.07),
    "Truck": (1.05, 0.88, 0.25, 0.0, 0.45, 0.14, 0.16),
}
# Side profiles: body outline (x along the length, front at x=1; y up from the ground) and the
# length/height ratio; windows are the outline's upper part inset.
_SIDE: dict[str, tuple[float, list[tuple[float, float]]]] = {
    "Sedan": (3.0, [(0, .18), (0, .5), (.06, .56), (.27, .6), (.37, .97), (.68, .97), (.8, .6), (1, .52),
                    (1, .18)]),
    "SUV": (2.4, [(0, .15), (0, .92), (.06, .98), (.72, .98), (.83, .62), (1, .56), (1, .15)]),
    "Minivan": (2.3, [(0, .13), (0, .93), (.05, .99), (.72, .99), (.9, .6), (1, .5), (1, .13)]),
    "Microbus": (2.0, [(0, .1), (0, .95), (.04, 1), (.92, 1), (.98, .72), (1, .45), (1, .1)]),
    "Bus": (3.6, [(0, .08), (0, .97), (.02, 1), (.98, 1), (1, .92), (1, .08)]),
    "Truck": (2.6, [(.73, .12), (.73, 1), (.95, 1), (1, .72), (1, .12)]),
}


def _validate(color: str, vtype: str, brand: str, style: str) -> None:
    for what, value, vocab in (("colour", color, VEHICLE_COLORS), ("type", vtype, VEHICLE_TYPES),
                               ("brand", brand, VEHICLE_BRANDS), ("style", style, STYLES)):
        if value not in vocab:
            raise KeyError(f"unknown vehicle {what} {value!r}; expected one of {list(vocab)}")


def render_vehicle(color: str, vtype: str, brand: str, rng: np.random.Generator, style: str) -> Image.Image:
    """Draw one vehicle crop of paint ``color``, body ``vtype`` and emblem ``brand``.

    ``style`` is "web" (train/val photos) or "surveillance" (test: overhead, dark, grey, soft).
    Raises ``KeyError`` naming the problem on a value outside the schema's vocabularies.
    """
    _validate(color, vtype, brand, style)
    seeds = rng.integers(0, 2**63, size=len(_STREAMS))
    r = {name: np.random.default_rng(int(s)) for name, s in zip(_STREAMS, seeds)}
    lay, cam = r["layout"], r["camera"]
    surv = style == "surveillance"
    u = lay.random()
    if surv:
        view = "front" if u < 0.55 else "rear"
    else:
        view = ("front" if u < 0.3 else "rear" if u < 0.5 else "side" if u < 0.7
                else "front34" if u < 0.9 else "rear34")
    w = int(lay.integers(64, 161) if surv else lay.integers(96, 193))
    aspect = {"side": (0.5, 0.72), "front34": (0.6, 0.85), "rear34": (0.6, 0.85)}.get(view, (0.8, 1.15))
    aspect = lay.uniform(*aspect)
    h = int(round(w * aspect))
    W, H = w * SCALE, h * SCALE
    if surv:
        img = _road(W, H, r["background"])
    elif r["background"].random() < 0.4:
        img = plain_background((W, H), r["background"])
    else:
        img = street_background((W, H), r["background"])
    paint = _paint(color, r["paint"])
    if view == "side":
        _draw_side(img, vtype, brand, paint, lay, W, H)
    elif view in ("front34", "rear34"):
        _draw_three_quarter(img, vtype, brand, paint, view, lay, r["brand"], W, H)
    else:
        pitch = lay.uniform(0.12, 0.3) if surv else lay.uniform(0.0, 0.08)
        _draw_front_rear(img, vtype, brand, paint, view, pitch, lay, r["brand"], W, H)
    if surv and lay.random() < 0.08:  # a passing car or a pole in front of the camera
        occlude(img, lay, 0.25)
    if lay.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if surv:
        return finish(img, (w, h), cam, gain=cam.uniform(0.55, 1.0), cast=0.05,
                      gradient=cam.uniform(0.0, 0.35), blur=cam.uniform(0.3, 1.0),
                      noise=cam.uniform(3.0, 9.0), saturation=cam.uniform(0.5, 0.8),
                      lowres=cam.uniform(0.45, 0.85))
    return finish(img, (w, h), cam, gain=cam.uniform(0.85, 1.2), cast=0.03,
                  gradient=cam.uniform(0.0, 0.2), blur=cam.uniform(0.0, 0.5),
                  noise=cam.uniform(0.5, 3.0), saturation=cam.uniform(0.9, 1.15),
                  lowres=1.0 if cam.random() < 0.8 else cam.uniform(0.6, 0.9))


# --------------------------------------------------------------------------- paint, backdrop

def _paint(color: str, rng: np.random.Generator) -> RGB:
    """The body colour: the nominal paint with a small shift in hue and brightness."""
    base = jitter(PAINT[color], rng, 10)
    factor = rng.uniform(0.8, 1.15) if color not in ("black", "white") else rng.uniform(0.92, 1.05)
    return shade(base, factor)


def _road(W: int, H: int, rng: np.random.Generator) -> Image.Image:
    """Asphalt seen from a pole-mounted camera: grey, lane marks, bits of neighbouring cars."""
    g = int(rng.integers(55, 120))
    img = Image.new("RGB", (W, H), jitter((g, g, g + 3), rng, 6))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 3))):
        x = rng.uniform(0, W)
        d.line((x, 0, x + rng.uniform(-0.3, 0.3) * W, H), fill=jitter((200, 200, 190), rng, 20),
               width=max(1, W // 40))
    for _ in range(int(rng.integers(0, 3))):  # a neighbour's bumper or roof at the frame edge
        x0 = rng.choice([-0.2, 0.85]) * W
        y0 = rng.uniform(-0.2, 0.8) * H
        d.rectangle((x0, y0, x0 + W * 0.35, y0 + H * rng.uniform(0.2, 0.5)),
                    fill=desaturate(jitter(pick(rng, list(PAINT.values())), rng, 15), 0.5))
    return img


# --------------------------------------------------------------------------- brands

@dataclass(frozen=True)
class BrandStyle:
    """How a brand marks its cars: the emblem (unique per brand) and shared design habits."""

    shape: int  # outer emblem shape, see _EMBLEM_SHAPES
    mark: int  # inner mark, see _emblem
    outer: RGB
    inner: RGB
    grille: int  # grille pattern (shared by several brands)
    lights: int  # headlight shape (shared)


_EMBLEM_SHAPES = ("circle", "ellipse", "shield", "diamond", "rounded", "hexagon", "ring", "wings")
_EMBLEM_MARKS = 9
_EMBLEM_COLORS: tuple[RGB, ...] = ((205, 205, 210), (215, 175, 60), (30, 70, 175), (185, 30, 35),
                                   (20, 20, 22), (245, 245, 245), (20, 120, 70))


@lru_cache(maxsize=None)
def brand_styles() -> dict[str, BrandStyle]:
    """Every brand's style, derived from a hash of its name; emblems are pairwise distinct.

    A collision with an earlier brand (in schema order) is resolved by re-hashing with a counter,
    so the table is deterministic and stable while the vocabulary is.
    """
    out: dict[str, BrandStyle] = {}
    seen: set[tuple] = set()
    for brand in VEHICLE_BRANDS:
        k = 0
        while True:
            h = hashlib.sha256(f"{brand}#{k}".encode()).digest()
            outer = _EMBLEM_COLORS[h[2] % len(_EMBLEM_COLORS)]
            inner = _EMBLEM_COLORS[h[3] % len(_EMBLEM_COLORS)]
            key = (h[0] % len(_EMBLEM_SHAPES), h[1] % _EMBLEM_MARKS, outer, inner)
            if outer != inner and key not in seen:
                break
            k += 1
        seen.add(key)
        out[brand] = BrandStyle(key[0], key[1], outer, inner, h[4] % 5, h[5] % 4)
    return out


@lru_cache(maxsize=None)
def emblem(brand: str, size: int = 32) -> Image.Image:
    """The brand's emblem as an RGBA image of ``size`` pixels (transparent outside)."""
    s = brand_styles()[brand]
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    m = size - 1
    c = m / 2
    o, i = s.outer + (255,), s.inner + (255,)
    lw = max(1, size // 10)
    shape = _EMBLEM_SHAPES[s.shape]
    if shape == "circle":
        d.ellipse((0, 0, m, m), fill=o)
    elif shape == "ellipse":
        d.ellipse((0, m * 0.2, m, m * 0.8), fill=o)
    elif shape == "shield":
        d.polygon([(0, 0), (m, 0), (m, m * 0.55), (c, m), (0, m * 0.55)], fill=o)
    elif shape == "diamond":
        d.polygon([(c, 0), (m, c), (c, m), (0, c)], fill=o)
    elif shape == "rounded":
        d.rounded_rectangle((0, m * 0.15, m, m * 0.85), radius=size * 0.2, fill=o)
    elif shape == "hexagon":
        d.regular_polygon((c, c, c), 6, fill=o)
    elif shape == "ring":
        d.ellipse((0, 0, m, m), outline=o, width=max(2, size // 6))
    else:  # wings: a badge with two swept wings
        d.polygon([(0, m * 0.3), (c, m * 0.45), (m, m * 0.3), (m * 0.8, m * 0.65), (c, m * 0.7),
                   (m * 0.2, m * 0.65)], fill=o)
        d.ellipse((c - m * 0.2, m * 0.3, c + m * 0.2, m * 0.7), fill=o)
    q = m * 0.28  # the inner mark lives in the central box c +- q
    if s.mark == 0:
        d.line((c - q, c, c + q, c), fill=i, width=lw)
        d.line((c, c - q, c, c + q), fill=i, width=lw)
    elif s.mark == 1:
        d.line((c - q, c - q, c - q, c + q), fill=i, width=lw)
        d.line((c + q, c - q, c + q, c + q), fill=i, width=lw)
        d.line((c - q, c, c + q, c), fill=i, width=lw)
    elif s.mark == 2:
        d.regular_polygon((c, c, q * 1.2), 5, fill=i)
    elif s.mark == 3:
        d.line((c - q, c - q * 0.3, c, c + q * 0.5, c + q, c - q * 0.3), fill=i, width=lw)
    elif s.mark == 4:
        d.ellipse((c - q * 0.6, c - q * 0.6, c + q * 0.6, c + q * 0.6), fill=i)
    elif s.mark == 5:
        d.rectangle((c - q * 0.3, c - q, c + q * 0.3, c + q), fill=i)
    elif s.mark == 6:
        d.polygon([(c, c - q), (c + q, c + q), (c - q, c + q)], fill=i)
    elif s.mark == 7:
        d.ellipse((c - q, c - q * 0.5, c, c + q * 0.5), outline=i, width=lw)
        d.ellipse((c, c - q * 0.5, c + q, c + q * 0.5), outline=i, width=lw)
    else:  # a letter-like zigzag
        d.line((c - q, c - q, c + q, c - q, c - q, c + q, c + q, c + q), fill=i, width=lw)
    return img


def _paste_emblem(img: Image.Image, brand: str, cx: float, cy: float, size: float) -> None:
    n = max(3, int(round(size)))
    e = emblem(brand).resize((n, n), Image.Resampling.BILINEAR)
    img.paste(e, (int(round(cx - n / 2)), int(round(cy - n / 2))), e)


# --------------------------------------------------------------------------- views

def _trap(d: ImageDraw.ImageDraw, cx: float, y0: float, y1: float, w0: float, w1: float, fill: RGB) -> None:
    """A horizontal band of the body: half widths ``w0`` at ``y0`` and ``w1`` at ``y1``."""
    d.polygon([(cx - w0, y0), (cx + w0, y0), (cx + w1, y1), (cx - w1, y1)], fill=fill)


def _bands(vtype: str, view: str, pitch: float) -> tuple[float, ...]:
    """Front/rear band heights (roof, glass, bonnet, face, bumper, wheels), their sum, and the
    full height/width ratio, for a camera ``pitch`` (0 level, larger looks down on the roof)."""
    ratio, _, glass, bonnet, face, bumper, wheel = _FRONT[vtype]
    roof = pitch * 0.9  # an overhead camera sees the roof and more of the bonnet
    bonnet = bonnet * (1 + 2.5 * pitch) + (0.04 * pitch if vtype in ("Bus", "Truck", "Microbus") else 0)
    if view == "rear" and vtype == "Sedan":
        bonnet *= 0.7  # the boot lid
    total = roof + glass + bonnet + face + bumper + wheel
    return roof, glass, bonnet, face, bumper, wheel, total, ratio * total / (total - roof)


def _draw_front_rear(img: Image.Image, vtype: str, brand: str, paint: RGB, view: str, pitch: float,
                     rng: np.random.Generator, rb: np.random.Generator, W: int, H: int,
                     box: tuple[float, float, float] | None = None) -> None:
    """The vehicle face-on; ``box`` = (centre x, top y, width) places it, else it is fitted."""
    top_w = _FRONT[vtype][1]
    roof, glass, bonnet, face, bumper, wheel, total, tall = _bands(vtype, view, pitch)
    st = brand_styles()[brand]
    d = ImageDraw.Draw(img)
    if box is None:  # fit inside the frame, leaving a margin that varies (scale jitter)
        fill = rng.uniform(0.7, 0.95)
        bw = min(W * fill, H * fill / tall)
        cx = W / 2 + rng.uniform(-0.06, 0.06) * W
        y = H / 2 - bw * tall / 2 + rng.uniform(-0.05, 0.05) * H
    else:
        cx, y, bw = box
    bh = bw * tall
    unit = bh / total
    half = bw / 2
    lit = shade(paint, 1.12)
    dark = shade(paint, 0.78)
    if vtype == "Truck" and view == "front" and rng.random() < 0.6:  # a box body behind the cab
        box = jitter((200, 200, 198), rng, 25) if rng.random() < 0.5 else dark
        d.rectangle((cx - half * 1.02, y - unit * 0.12, cx + half * 1.02, y + unit * (roof + glass) * 0.8),
                    fill=box)
    if roof > 0:
        _trap(d, cx, y, y + roof * unit, half * top_w * 0.85, half * top_w, lit)
        if vtype == "SUV":
            for s in (-1, 1):
                d.line((cx + s * half * top_w * 0.8, y, cx + s * half * top_w * 0.95, y + roof * unit),
                       fill=(30, 30, 30), width=max(1, int(bw * 0.012)))
        y += roof * unit
    # greenhouse: pillars in paint, the glass inset
    g0, g1 = y, y + glass * unit
    _trap(d, cx, g0, g1, half * top_w, half * 0.95, paint)
    inset = bw * 0.03
    if vtype == "Bus":  # destination sign: a dark band with lit characters
        d.rectangle((cx - half * 0.9, g0 + inset, cx + half * 0.9, g0 + unit * 0.07), fill=(20, 20, 20))
        sign = (240, 150, 30) if view == "front" else (200, 60, 30)
        for k in range(5):
            x = cx - half * 0.5 + k * half * 0.22
            d.rectangle((x, g0 + inset + unit * 0.015, x + half * 0.12, g0 + unit * 0.055), fill=sign)
        g0 += unit * 0.08
    glass_col = jitter(GLASS, rng, 8)
    _trap(d, cx, g0 + inset, g1 - inset * 0.5, half * top_w - inset * 1.5, half * 0.95 - inset * 1.5,
          glass_col)
    refl = shade(glass_col, 1.6)  # a sky reflection across the glass
    rx = rng.uniform(-0.5, 0.3) * half
    d.polygon([(cx + rx, g0 + inset), (cx + rx + half * 0.2, g0 + inset), (cx + rx, g1 - inset),
               (cx + rx - half * 0.2, g1 - inset)], fill=refl)
    if vtype in ("Bus", "Truck", "Microbus"):  # a two-pane flat windscreen
        d.line((cx, g0, cx, g1), fill=paint, width=max(1, int(bw * 0.018)))
    if vtype == "Truck" and view == "front":  # marker lamps on the cab roof
        for k in (-1, 0, 1):
            mx = cx + k * half * 0.3
            d.rectangle((mx - bw * 0.025, g0 - unit * 0.02, mx + bw * 0.025, g0 + unit * 0.035),
                        fill=(240, 150, 30))
    if vtype == "SUV":  # roof rails standing above the roof line
        for s in (-1, 1):
            ry = g0 - unit * 0.035
            d.line((cx + s * half * top_w * 0.75, ry, cx + s * half * top_w * 0.97, ry),
                   fill=(30, 30, 30), width=max(1, int(bw * 0.02)))
    if vtype == "Truck" and view == "rear":  # the cargo box's doors instead of a rear window
        d.rectangle((cx - half, g0 - unit * 0.1, cx + half, g1), fill=shade(paint, 0.95))
        for k in (-1, 0, 1):
            x = cx + k * half * 0.5
            d.line((x, g0, x, g1), fill=dark, width=max(1, int(bw * 0.012)))
    if view == "front":
        for s in (-1, 1):  # mirrors
            mx = cx + s * half * 1.03
            d.rectangle((mx - half * 0.05, g1 - unit * 0.1, mx + half * 0.05, g1 - unit * 0.02), fill=dark)
    y = g1
    if bonnet > 0:
        _trap(d, cx, y, y + bonnet * unit, half * 0.95, half, lit)
        y += bonnet * unit
    f0, f1 = y, y + face * unit
    d.rectangle((cx - half, f0, cx + half, f1), fill=paint)
    lamp_w, lamp_h = bw * 0.2, face * unit * 0.35
    if view == "front":
        _grille(d, cx, f0, f1, bw, st.grille, vtype)
        lamp = jitter((225, 225, 210), rng, 10)
        for s in (-1, 1):
            lx = cx + s * (half - lamp_w * 0.6)
            ly = f0 + face * unit * 0.3
            _lamp(d, lx, ly, lamp_w, lamp_h, st.lights, s, lamp)
        ex, ey = cx, f0 + face * unit * rb.uniform(0.2, 0.35)
    else:
        tail = jitter((190, 25, 30), rng, 15)
        for s in (-1, 1):
            lx = cx + s * (half - lamp_w * 0.55)
            _lamp(d, lx, f0 + face * unit * 0.35, lamp_w, lamp_h, st.lights, s, tail)
        ex, ey = cx, f0 + face * unit * rb.uniform(0.2, 0.4)
    esize = bw * rb.uniform(0.06, 0.1) * (0.8 if vtype in ("Bus", "Truck") else 1.0)
    _paste_emblem(img, brand, ex + rb.uniform(-0.01, 0.01) * bw, ey, esize)
    b0, b1 = f1, f1 + bumper * unit
    d.rectangle((cx - half * 1.01, b0, cx + half * 1.01, b1), fill=dark)
    plate = (30, 60, 170) if rng.random() < 0.8 else (220, 190, 30)
    pw, ph = bw * 0.2, bumper * unit * 0.5
    d.rectangle((cx - pw / 2, b0 + ph * 0.4, cx + pw / 2, b0 + ph * 1.4), fill=plate)
    if vtype == "SUV":  # black plastic cladding at the lower corners
        for s in (-1, 1):
            d.polygon([(cx + s * half * 1.02, b0 - unit * 0.08), (cx + s * half * 0.7, b1),
                       (cx + s * half * 1.02, b1)], fill=(35, 35, 36))
    tyre = bw * {"Truck": 0.1, "Bus": 0.09, "SUV": 0.085}.get(vtype, 0.07)
    for s in (-1, 1):  # tyres under the bumper (ground clearance grows from sedan to truck)
        d.rectangle((cx + s * half * 0.84 - tyre, b1, cx + s * half * 0.84 + tyre, b1 + wheel * unit),
                    fill=(18, 18, 18))
    if vtype == "Truck":  # the step and the axle under the cab
        d.rectangle((cx - half * 0.6, b1, cx + half * 0.6, b1 + wheel * unit * 0.35), fill=(30, 30, 32))


def _grille(d: ImageDraw.ImageDraw, cx: float, f0: float, f1: float, bw: float, kind: int,
            vtype: str) -> None:
    """The brand's habitual grille (several brands share each kind)."""
    big = vtype in ("Truck", "Bus")
    gw = bw * (0.42 if not big else 0.6)
    gh = (f1 - f0) * (0.55 if not big else 0.7)
    gy = f0 + (f1 - f0) * 0.4
    box = (cx - gw / 2, gy, cx + gw / 2, gy + gh * 0.8)
    dark, chrome = (22, 22, 24), (170, 170, 175)
    lw = max(1, int(bw * 0.01))
    if kind == 4:  # twin kidneys
        d.rounded_rectangle((box[0], box[1], cx - bw * 0.01, box[3]), radius=gw * 0.1, fill=dark)
        d.rounded_rectangle((cx + bw * 0.01, box[1], box[2], box[3]), radius=gw * 0.1, fill=dark)
        return
    d.rectangle(box, fill=dark)
    n = 4
    if kind == 0:
        for k in range(1, n):
            y = box[1] + (box[3] - box[1]) * k / n
            d.line((box[0], y, box[2], y), fill=chrome, width=lw)
    elif kind == 1:
        for k in range(1, 2 * n):
            x = box[0] + (box[2] - box[0]) * k / (2 * n)
            d.line((x, box[1], x, box[3]), fill=(60, 60, 62), width=lw)
        for k in range(1, n):
            y = box[1] + (box[3] - box[1]) * k / n
            d.line((box[0], y, box[2], y), fill=(60, 60, 62), width=lw)
    elif kind == 2:
        for k in range(1, 2 * n):
            x = box[0] + (box[2] - box[0]) * k / (2 * n)
            d.line((x, box[1], x, box[3]), fill=chrome, width=lw)
    else:
        y = (box[1] + box[3]) / 2
        d.line((box[0], y, box[2], y), fill=chrome, width=max(2, lw * 3))


def _lamp(d: ImageDraw.ImageDraw, x: float, y: float, w: float, h: float, kind: int, side: int,
          col: RGB) -> None:
    """Head or tail lamp of the brand's habitual shape."""
    if kind == 0:
        d.rectangle((x - w / 2, y - h / 2, x + w / 2, y + h / 2), fill=col)
    elif kind == 1:
        d.ellipse((x - h * 0.6, y - h * 0.6, x + h * 0.6, y + h * 0.6), fill=col)
    elif kind == 2:  # slanted, thin
        d.polygon([(x - side * w / 2, y - h * 0.3), (x + side * w / 2, y - h / 2),
                   (x + side * w / 2, y + h * 0.1), (x - side * w / 2, y + h * 0.3)], fill=col)
    else:  # two round lamps
        for k in (-1, 1):
            lx = x + k * w * 0.22
            d.ellipse((lx - h * 0.4, y - h * 0.4, lx + h * 0.4, y + h * 0.4), fill=col)


def _draw_side(img: Image.Image, vtype: str, brand: str, paint: RGB, rng: np.random.Generator,
               W: int, H: int) -> None:
    """A side profile facing right: body, windows, wheels with the emblem on the hubs."""
    length = _SIDE[vtype][0]
    fill = rng.uniform(0.75, 0.95)
    L = min(W * fill, H * fill * length / 1.15)
    Hv = L / length
    x0 = (W - L) / 2 + rng.uniform(-0.04, 0.04) * W
    ground = (H + Hv) / 2 + rng.uniform(-0.03, 0.03) * H

    def pt(u: float, v: float) -> tuple[float, float]:
        return (x0 + u * L, ground - v * Hv)

    _side_body(img, vtype, brand, paint, rng, pt, L, Hv, lambda u: 1.0)


def _draw_three_quarter(img: Image.Image, vtype: str, brand: str, paint: RGB, view: str,
                        rng: np.random.Generator, rb: np.random.Generator, W: int, H: int) -> None:
    """A three-quarter view: the face (front or rear) on the right, the side receding to the left.

    The side profile is foreshortened and shrinks with distance; its near end meets the face.
    """
    face_view = "front" if view == "front34" else "rear"
    length = _SIDE[vtype][0]
    pitch = rng.uniform(0.0, 0.06)
    tall = _bands(vtype, face_view, pitch)[-1]
    k = rng.uniform(0.35, 0.55)  # foreshortening of the side
    fill = rng.uniform(0.75, 0.95)
    fw = min(W * fill / (1 + tall * length * k), H * fill / (tall * 1.05))
    fh = fw * tall
    side = fh * length * k
    x0 = (W - fw - side) / 2 + rng.uniform(-0.04, 0.04) * W
    ground = (H + fh) / 2 + rng.uniform(-0.03, 0.03) * H
    far = rng.uniform(0.15, 0.3)  # how much smaller the far end looks

    def near(u: float) -> float:  # 1 at the end that meets the face, 0 at the far end
        return u if face_view == "front" else 1 - u

    def scale(u: float) -> float:
        return 1 - far * (1 - near(u))

    def pt(u: float, v: float) -> tuple[float, float]:
        t = near(u)  # the near end runs a little way behind the face, which hides it
        return (x0 + t * (side + fw * 0.3), ground - fh * 0.1 * (1 - t) - v * fh * 0.97 * scale(u))

    _side_body(img, vtype, brand, paint, rng, pt, side, fh * 0.97, scale)
    _draw_front_rear(img, vtype, brand, paint, face_view, pitch, rng, rb, W, H,
                     box=(x0 + side + fw / 2, ground - fh, fw))


def _side_body(img: Image.Image, vtype: str, brand: str, paint: RGB, rng: np.random.Generator,
               pt, L: float, Hv: float, scale) -> None:
    """The side of the body through the projection ``pt(u, v)`` (u along, front at 1; v up).

    ``L`` and ``Hv`` are its drawn length and height in pixels, ``scale(u)`` how much smaller
    the body looks at ``u`` (1 everywhere in a pure side view).
    """
    outline = _SIDE[vtype][1]
    d = ImageDraw.Draw(img)

    def quad(u0: float, v0: float, u1: float, v1: float, fill: RGB) -> None:
        d.polygon([pt(u0, v0), pt(u1, v0), pt(u1, v1), pt(u0, v1)], fill=fill)

    dark = shade(paint, 0.75)
    if vtype == "Truck":  # cargo box and chassis behind the cab
        quad(0, 0.95, 0.7, 0.18, jitter((195, 195, 195), rng, 25) if rng.random() < 0.5 else paint)
        quad(0, 0.18, 0.75, 0.12, (30, 30, 30))
    d.polygon([pt(u, v) for u, v in outline], fill=paint)
    d.line((*pt(0, 0.35), *pt(1, 0.35)), fill=dark, width=max(1, int(Hv * 0.02)))
    glass = jitter(GLASS, rng, 8)
    if vtype == "Sedan":
        d.polygon([pt(.3, .6), pt(.38, .9), pt(.66, .9), pt(.76, .6)], fill=glass)
    elif vtype == "Truck":
        d.polygon([pt(.76, .62), pt(.76, .92), pt(.93, .92), pt(.97, .66)], fill=glass)
    elif vtype == "Bus":
        for k in range(7):
            quad(0.03 + k * 0.135, 0.88, 0.03 + k * 0.135 + 0.11, 0.55, glass)
    else:
        top = {"SUV": .92, "Minivan": .93, "Microbus": .94}[vtype]
        front = {"SUV": .8, "Minivan": .86, "Microbus": .94}[vtype]
        d.polygon([pt(.04, .6), pt(.04, top), pt(front - .06, top), pt(front, .62)], fill=glass)
        for u in (0.3, 0.55):
            d.line((*pt(u, .6), *pt(u, top)), fill=paint, width=max(1, int(L * 0.01)))
    d.line((*pt(0.5, 0.55), *pt(0.5, 0.2)), fill=dark, width=1)  # door seam
    axles = {"Bus": (0.15, 0.82), "Truck": (0.18, 0.86)}.get(vtype, (0.18, 0.82))
    squash = min(1.0, 1.6 * L / (Hv * _SIDE[vtype][0]))  # wheels look narrower when foreshortened
    for u in axles:
        r = Hv * (0.17 if vtype != "Bus" else 0.13) * scale(u)
        rx = r * squash
        wx, wy = pt(u, 0)
        wy -= r * 0.95
        d.ellipse((wx - rx, wy - r, wx + rx, wy + r), fill=(18, 18, 18))
        d.ellipse((wx - rx * 0.5, wy - r * 0.5, wx + rx * 0.5, wy + r * 0.5), fill=(175, 175, 180))
        _paste_emblem(img, brand, wx, wy, min(r, rx) * 0.55)
    quad(0.965, 0.49, 1.0, 0.41, jitter((230, 225, 200), rng, 10))  # head lamp
    quad(0.0, 0.54, 0.03, 0.46, (180, 25, 30))  # tail lamp
