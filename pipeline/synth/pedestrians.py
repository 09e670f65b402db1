"""Procedural pedestrian crops (PA-100K-like): every attribute group and boots drawn in the pixels.

A person is laid out from the attributes (age sets head-to-body proportions, gender the
shoulder/hip widths and usual hair) plus random nuisance (size in frame, position, stance,
colours), then drawn back to front for the orientation: legs and lower garment, boots, torso
garment with its upper pattern (extended below the hips for a long coat), arms with sleeves,
bags, held object, head with hair, face, glasses and hat. See docs/synthetic_data.md,
"How images are drawn", for each attribute.

Randomness: the caller's ``rng`` only seeds independent streams (layout, each attribute,
camera). Toggling one attribute therefore leaves the rest of the picture as it was, which keeps
the image a controlled experiment and lets the tests check where each attribute shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from pipeline.schema import PEDESTRIAN_GROUPS
from pipeline.synth.drawing import (
    RGB, SKIN, cloth, contrasting, finish, jitter, occlude, pick, shade, street_background,
)

SCALE = 2  # draw at twice the output size, reduce at the end (anti-aliasing)
WIDTH_RANGE = (40, 90)  # output width in pixels, inclusive
ASPECT_RANGE = (2.5, 3.1)  # height / width

HAIR = ((20, 18, 18), (35, 28, 22), (60, 42, 30), (95, 70, 45), (150, 120, 80), (110, 45, 30))
GREY_HAIR = ((200, 200, 200), (170, 170, 168), (225, 225, 220), (140, 140, 140))
_STREAMS = ("layout", "camera", "hat", "glasses", "handbag", "bag", "holds_objects", "upper",
            "long_coat", "skirt", "boots", "sleeve", "hair")


def _validate(attrs: dict[str, str]) -> None:
    for g in PEDESTRIAN_GROUPS:
        if g.name not in attrs:
            raise KeyError(f"pedestrian attributes lack group {g.name!r}")
        g.index(attrs[g.name])  # raises naming the group on an unknown value


@dataclass
class Person:
    """Geometry (canvas pixels) and colours of one pedestrian; x grows right, y down."""

    cx: float  # body centre line
    top: float  # top of the head
    fy: float  # soles
    hh: float  # head height
    hw: float  # head width
    hcx: float  # head centre x (side views lean forward, the elderly more)
    hcy: float
    sy: float  # shoulder line
    sw: float  # half shoulder width (front/back) or half torso depth (side)
    hy: float  # hip line
    hipw: float  # half hip width
    ky: float  # knee line
    skin: RGB
    upper: RGB
    lower: RGB
    shoe: RGB
    hair: RGB
    hair_style: str  # short | long | ponytail | bald
    swing: float  # arm swing / stride, fraction of body height
    stance: float  # feet apart, fraction of hip width

    @property
    def height(self) -> float:
        return self.fy - self.top


def render_pedestrian(attrs: dict[str, str], boots: bool, rng: np.random.Generator) -> Image.Image:
    """Draw one pedestrian crop showing ``attrs`` (the 12 groups of ``schema``) and ``boots``.

    Returns an RGB portrait image about 40-90 px wide and 2.5-3.1 times as tall. Raises
    ``KeyError`` naming the group when ``attrs`` lacks a group or has an unknown value.
    """
    _validate(attrs)
    seeds = rng.integers(0, 2**63, size=len(_STREAMS))
    r = {name: np.random.default_rng(int(s)) for name, s in zip(_STREAMS, seeds)}
    lay = r["layout"]
    w = int(lay.integers(WIDTH_RANGE[0], WIDTH_RANGE[1] + 1))
    h = int(round(w * lay.uniform(*ASPECT_RANGE)))
    W, H = w * SCALE, h * SCALE
    img = street_background((W, H), lay)
    p = _layout(attrs, W, H, lay, r["hair"])
    view = attrs["orientation"]
    d = ImageDraw.Draw(img)
    _draw(img, d, p, attrs, boots, view, r)
    if lay.random() < 0.12:
        occlude(img, lay, 0.3)
    if lay.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    cam = r["camera"]
    return finish(img, (w, h), cam, gain=cam.uniform(0.6, 1.25), cast=0.06,
                  gradient=cam.uniform(0.0, 0.4), blur=cam.uniform(0.0, 0.7),
                  noise=cam.uniform(1.0, 7.0), saturation=cam.uniform(0.6, 1.1),
                  lowres=1.0 if cam.random() < 0.65 else cam.uniform(0.5, 0.9))


# --------------------------------------------------------------------------- layout

def _layout(attrs: dict[str, str], W: int, H: int, rng: np.random.Generator,
            hair_rng: np.random.Generator) -> Person:
    """Place and proportion the figure: age sets the head and legs, gender the build and hair."""
    age, female, view = attrs["age"], attrs["gender"] == "female", attrs["orientation"]
    top = H * rng.uniform(0.0, 0.06)
    fy = H * rng.uniform(0.94, 1.0)
    ht = fy - top
    head_ratio = {"under18": rng.uniform(0.16, 0.2), "18to60": rng.uniform(0.12, 0.14),
                  "over60": rng.uniform(0.125, 0.145)}[age]
    hh = ht * head_ratio
    hw = hh * rng.uniform(0.74, 0.84)
    # Children: big head, short legs; adults: hips near mid-height.
    hip_frac = rng.uniform(0.46, 0.5)
    if age == "under18":
        hip_frac = 0.54
    sw = ht * (rng.uniform(0.085, 0.105) if not female else rng.uniform(0.072, 0.09))
    if age == "under18":
        sw *= 0.9
    hipw = sw * (rng.uniform(0.88, 1.0) if female else rng.uniform(0.74, 0.84))
    if view == "side":
        sw, hipw = sw * 0.55, sw * 0.55
    cx = W / 2 + W * rng.uniform(-0.09, 0.09)
    # Draw every number whatever the attributes, so one attribute never reshuffles the rest.
    lean_old, lean_young = rng.uniform(0.25, 0.45), rng.uniform(0.0, 0.15)
    lean = hw * (lean_old if age == "over60" else lean_young) if view == "side" else 0.0
    sy = top + hh * (1.08 if age == "over60" else 1.18)  # stoop: shoulders high, head sunk
    hy = top + ht * hip_frac
    ky = hy + (fy - hy) * rng.uniform(0.47, 0.53)

    if age == "over60" and hair_rng.random() < 0.85:
        hair = jitter(pick(hair_rng, GREY_HAIR), hair_rng, 8)
    else:
        hair = jitter(pick(hair_rng, HAIR), hair_rng, 8)
    u = hair_rng.random()
    if female:
        style = "long" if u < 0.72 else "ponytail" if u < 0.84 else "short"
    else:
        style = "short" if u < 0.9 else "long" if u < 0.95 else "bald"
        if age == "over60" and u < 0.35:
            style = "bald"
    upper = cloth(rng)
    lower = cloth(rng)
    swing_still, swing_walk = rng.uniform(-0.05, 0.05), rng.uniform(0.02, 0.12)
    return Person(cx=cx, top=top, fy=fy, hh=hh, hw=hw, hcx=cx + lean, hcy=top + hh / 2, sy=sy,
                  sw=sw, hy=hy, hipw=hipw, ky=ky, skin=jitter(pick(rng, SKIN), rng, 8),
                  upper=upper, lower=lower, shoe=shade(cloth(rng), 0.6), hair=hair,
                  hair_style=style, swing=swing_walk if view == "side" else swing_still,
                  stance=rng.uniform(0.2, 0.6))


# --------------------------------------------------------------------------- drawing

def _draw(img: Image.Image, d: ImageDraw.ImageDraw, p: Person, a: dict[str, str], boots: bool,
          view: str, r: dict[str, np.random.Generator]) -> None:
    """Paint the person back to front; each attribute uses only its own random stream."""
    pack = shade(cloth(r["bag"]), r["bag"].uniform(0.5, 1.0))
    rh = r["handbag"]
    # Which hand holds the handbag, and whether in the elbow's crook (always when the hands are
    # busy with an object); the arms and the bag must agree, so this is drawn once.
    carry = (-1 if rh.random() < 0.5 else 1, a["holds_objects"] == "yes" or rh.random() < 0.3)
    if p.hair_style == "long" and view == "front":
        _long_hair_behind(d, p)
    if a["bag"] == "backpack" and view != "back":
        _backpack_behind(d, p, pack, view)
    if a["holds_objects"] == "yes" and view == "back":
        _held_object(d, p, view, r["holds_objects"])  # peeks out at both sides of the back
    _legs(d, p, a, boots, view, r)
    coat = a["long_coat"] == "yes"
    if coat:  # the coat is the visible upper garment from here on; the sleeves follow it
        rc = r["long_coat"]
        p.upper = jitter(pick(rc, ((35, 35, 40), (70, 60, 50), (140, 110, 80), (40, 50, 75),
                                   (120, 120, 120), (190, 170, 140), (90, 30, 35), (30, 55, 40))), rc, 12)
    _torso(img, p, a["upper"], coat, view, r["upper"], r["long_coat"])
    if p.hair_style == "long" and view == "side":
        _long_hair_side(d, p)
    _arms(d, p, a, view, carry, r["sleeve"])
    if a["bag"] == "backpack" and view == "back":
        _backpack_back(d, p, pack)
    if a["bag"] == "backpack" and view != "back":
        _backpack_straps(d, p, pack, view)
    if a["bag"] == "shoulder":
        _shoulder_bag(d, p, pack, view, r["bag"])
    if a["handbag"] == "yes":
        _handbag(d, p, view, a["holds_objects"] == "yes", carry, rh)
    if a["holds_objects"] == "yes" and view != "back":
        _held_object(d, p, view, r["holds_objects"])
    _head(d, p, view)
    if p.hair_style == "long" and view == "back":
        _long_hair_back(d, p)
    if a["glasses"] == "yes":
        _glasses(d, p, view, r["glasses"])
    if a["hat"] == "yes":
        _hat(d, p, view, r["hat"])


def _w(x: float) -> int:
    """Line width in canvas pixels, at least 1."""
    return max(1, int(round(x)))


def _long_hair_behind(d: ImageDraw.ImageDraw, p: Person) -> None:
    end = p.sy + (p.hy - p.sy) * 0.35
    d.rounded_rectangle((p.hcx - p.hw * 0.62, p.top + p.hh * 0.1, p.hcx + p.hw * 0.62, end),
                        radius=p.hw * 0.3, fill=p.hair)


def _long_hair_side(d: ImageDraw.ImageDraw, p: Person) -> None:
    end = p.sy + (p.hy - p.sy) * 0.35
    d.polygon([(p.hcx - p.hw * 0.5, p.hcy - p.hh * 0.1), (p.hcx, p.hcy + p.hh * 0.3),
               (p.cx - p.sw * 0.2, end), (p.cx - p.sw * 1.15, end)], fill=p.hair)


def _long_hair_back(d: ImageDraw.ImageDraw, p: Person) -> None:
    end = p.sy + (p.hy - p.sy) * 0.4
    d.polygon([(p.hcx - p.hw * 0.5, p.hcy), (p.hcx + p.hw * 0.5, p.hcy),
               (p.hcx + p.hw * 0.62, end), (p.hcx - p.hw * 0.62, end)], fill=p.hair)


def _legs(d: ImageDraw.ImageDraw, p: Person, a: dict[str, str], boots: bool, view: str,
          r: dict[str, np.random.Generator]) -> None:
    skirt = a["skirt"] == "yes"
    rs, rb = r["skirt"], r["boots"]
    lw = p.hipw * (0.42 if view != "side" else 0.75)  # leg half width at the thigh
    aw = lw * 0.55  # at the ankle
    shoe_h = p.height * 0.025
    if view == "side":
        stride = p.height * p.swing
        feet = [(p.cx - stride, 0.8), (p.cx + stride, 1.0)]  # far leg darker
        hips = [p.cx, p.cx]
    else:
        spread = p.hipw * p.stance
        feet = [(p.cx - p.hipw * 0.45 - spread * 0.5, 1.0), (p.cx + p.hipw * 0.45 + spread * 0.5, 1.0)]
        hips = [p.cx - p.hipw * 0.5, p.cx + p.hipw * 0.5]
    ankle_y = p.fy - shoe_h
    # Bare legs under a skirt or shorts; trousers otherwise.
    u = rs.random()
    shorts = not skirt and u < 0.12
    leg_col = p.skin
    if skirt and u < 0.35:  # tights: dark, or a sheer skin-ish tone
        leg_col = jitter((30, 30, 35), rs, 6) if u < 0.2 else shade(p.skin, 0.75)
    bcol = jitter(pick(rb, ((25, 22, 20), (70, 45, 30), (110, 80, 55), (40, 40, 45),
                            (150, 120, 90), (190, 180, 170))), rb, 10)
    boot_h = (p.fy - p.ky) * rb.uniform(0.35, 0.8)
    for (fx, s), hx in zip(feet, hips):
        poly = [(hx - lw, p.hy), (hx + lw, p.hy), (fx + aw, ankle_y), (fx - aw, ankle_y)]
        if skirt or shorts:
            d.polygon(poly, fill=shade(leg_col, s))
        else:
            d.polygon(poly, fill=shade(p.lower, s))
        if shorts:
            cut = p.hy + (p.ky - p.hy) * rs.uniform(0.6, 1.05)
            t = (cut - p.hy) / (ankle_y - p.hy)
            d.polygon([(hx - lw * 1.1, p.hy), (hx + lw * 1.1, p.hy),
                       (hx + (fx - hx) * t + lw * 1.05, cut), (hx + (fx - hx) * t - lw * 1.05, cut)],
                      fill=shade(p.lower, s))
        if boots:
            top = ankle_y - boot_h
            t = (top - p.hy) / (ankle_y - p.hy)
            bx = hx + (fx - hx) * t
            d.polygon([(bx - aw * 1.35, top), (bx + aw * 1.35, top), (fx + aw * 1.3, p.fy),
                       (fx - aw * 1.3, p.fy)], fill=shade(bcol, s))
            d.line((bx - aw * 1.35, top, bx + aw * 1.35, top), fill=shade(bcol, 0.6 * s),
                   width=_w(shoe_h * 0.4))
        toe = aw * 1.6 if view == "side" else 0.0
        d.ellipse((fx - aw * 1.3, p.fy - shoe_h * 1.3, fx + aw * 1.3 + toe, p.fy), fill=shade(p.shoe, s))
    if skirt:
        length = rs.uniform(0.2, 0.7) if a["long_coat"] == "no" else rs.uniform(0.6, 0.8)
        hem = p.hy + (p.fy - p.hy) * length
        flare = p.hipw * rs.uniform(1.15, 1.6) + (abs(p.height * p.swing) * 0.5 if view == "side" else 0)
        col = p.upper if rs.random() < 0.3 else shade(cloth(rs), 1.0)  # a dress or a skirt
        waist = p.hy - (p.hy - p.sy) * 0.12
        d.polygon([(p.cx - p.hipw * 1.02, waist), (p.cx + p.hipw * 1.02, waist),
                   (p.cx + flare, hem), (p.cx - flare, hem)], fill=col)
        if rs.random() < 0.5:  # pleats / hem line so a skirt is not a flat wedge
            d.line((p.cx - flare, hem, p.cx + flare, hem), fill=shade(col, 0.7), width=_w(p.height * 0.006))


def _torso(img: Image.Image, p: Person, pattern: str, coat: bool, view: str,
           ru: np.random.Generator, rc: np.random.Generator) -> None:
    """The upper garment (a long coat continues it to the knees), filled with its pattern."""
    body_h = p.hy - p.sy
    hem = p.hy + body_h * ru.uniform(-0.05, 0.12)
    hem_w = p.hipw * 1.08
    if coat:
        hem = p.ky + (p.fy - p.ky) * rc.uniform(-0.15, 0.3)
        hem_w = p.hipw * rc.uniform(1.2, 1.45) + (abs(p.height * p.swing) * 0.3 if view == "side" else 0)
    neck = p.hw * 0.28
    sw = p.sw
    poly = [(p.cx - neck, p.sy - p.hh * 0.06), (p.cx + neck, p.sy - p.hh * 0.06),
            (p.cx + sw, p.sy + p.hh * 0.1), (p.cx + sw * 0.95, p.hy - body_h * 0.3),
            (p.cx + hem_w, hem), (p.cx - hem_w, hem), (p.cx - sw * 0.95, p.hy - body_h * 0.3),
            (p.cx - sw, p.sy + p.hh * 0.1)]
    if view == "side":
        poly = [(p.cx - sw, p.sy), (p.cx + sw * 0.7, p.sy - p.hh * 0.05),
                (p.cx + sw * 1.05, p.sy + body_h * 0.3), (p.cx + hem_w, hem), (p.cx - hem_w, hem),
                (p.cx - sw * 1.05, p.sy + body_h * 0.2)]
    base = p.upper
    xs, ys = [q[0] for q in poly], [q[1] for q in poly]
    x0, y0 = int(min(xs)), int(min(ys))
    bw, bh = int(max(xs)) - x0 + 2, int(max(ys)) - y0 + 2
    tex = Image.new("RGB", (bw, bh), base)
    td = ImageDraw.Draw(tex)
    _pattern(td, pattern, base, bw, bh, (p.cx - x0, p.sy - y0, p.sw, body_h), view, ru)
    if coat and view == "front":  # the coat's opening
        td.line((p.cx - x0, p.hy - y0 - body_h * 0.4, p.cx - x0, bh), fill=shade(base, 0.6),
                width=_w(p.sw * 0.06))
    mask = Image.new("L", (bw, bh), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in poly], fill=255)
    img.paste(tex, (x0, y0), mask)


def _pattern(td: ImageDraw.ImageDraw, kind: str, base: RGB, bw: int, bh: int,
             chest: tuple[float, float, float, float], view: str, rng: np.random.Generator) -> None:
    """Fill a garment texture with stripes, a logo, plaid, spliced colour blocks or nothing."""
    cx, sy, sw, body_h = chest
    other = contrasting(base, rng)
    if kind == "stripe":
        period = max(3.0, body_h * rng.uniform(0.1, 0.2))
        thick = _w(period * rng.uniform(0.35, 0.55))
        vertical = rng.random() < 0.2
        off = rng.uniform(0, period)
        n = int((bw if vertical else bh) / period) + 2
        for i in range(n):
            t = off + i * period
            td.line((t, 0, t, bh) if vertical else (0, t, bw, t), fill=other, width=thick)
    elif kind == "plaid":
        period = max(4.0, body_h * rng.uniform(0.12, 0.22))
        third = shade(contrasting(other, rng), 1.0)
        off = rng.uniform(0, period, 2)
        for i in range(int(max(bw, bh) / period) + 2):
            td.line((off[0] + i * period, 0, off[0] + i * period, bh), fill=other, width=_w(period * 0.3))
            td.line((0, off[1] + i * period, bw, off[1] + i * period), fill=third, width=_w(period * 0.3))
    elif kind == "logo":
        s = sw * rng.uniform(0.35, 0.75)
        lx = cx + sw * rng.uniform(-0.45, 0.45)
        if view == "side":  # on the chest, in front of the arm that hangs from the shoulder
            s, lx = s * 1.3, cx + sw * rng.uniform(0.35, 0.6)
        ly = sy + body_h * rng.uniform(0.2, 0.5)
        box = (lx - s / 2, ly - s / 2, lx + s / 2, ly + s / 2)
        shape = int(rng.integers(5))
        if shape == 0:
            td.ellipse(box, fill=other)
        elif shape == 1:
            td.rectangle(box, fill=other)
        elif shape == 2:
            td.polygon([(lx, box[1]), (box[2], box[3]), (box[0], box[3])], fill=other)
        elif shape == 3:
            td.regular_polygon((lx, ly, s / 2), 5, rotation=rng.uniform(0, 72), fill=other)
        else:  # a word: a row of letter-like blocks
            for i in range(3):
                x = box[0] + i * s / 3
                td.rectangle((x, ly - s / 5, x + 0.7 * s / 3, ly + s / 5), fill=other)
        if rng.random() < 0.5:
            inner = contrasting(other, rng)
            td.ellipse((lx - s / 5, ly - s / 5, lx + s / 5, ly + s / 5), fill=inner)
    elif kind == "splice":
        how = int(rng.integers(4))
        cut = rng.uniform(0.35, 0.65)
        if how == 0:  # top and bottom halves
            td.rectangle((0, sy + body_h * cut, bw, bh), fill=other)
        elif how == 1:  # left and right halves
            td.rectangle((cx + sw * (cut - 0.5), 0, bw, bh), fill=other)
        elif how == 2:  # a yoke across the shoulders
            td.rectangle((0, 0, bw, sy + body_h * cut * 0.6), fill=other)
        else:  # diagonal blocks
            td.polygon([(0, sy + body_h * cut), (bw, sy), (bw, bh), (0, bh)], fill=other)
    else:  # plain; a zip or a seam sometimes, so a single line is not a stripe
        if rng.random() < 0.3:
            td.line((cx, sy, cx, bh), fill=shade(base, 0.75), width=1)


def _arm_points(p: Person, side: int, pose: str, swing: float) -> list[tuple[float, float]]:
    """Shoulder, elbow and hand of the arm on ``side`` (-1 left, +1 right of the image)."""
    body_h = p.hy - p.sy
    shoulder = (p.cx + side * p.sw * 0.88, p.sy + p.hh * 0.18)
    if pose == "hold":  # forearm bent inward to an object in front of the belly
        return [shoulder, (p.cx + side * p.sw * 1.05, p.sy + body_h * 0.6),
                (p.cx + side * p.sw * 0.55, p.sy + body_h * 0.72)]
    if pose == "crook":  # forearm raised, a bag hanging in the elbow
        return [shoulder, (p.cx + side * p.sw * 1.15, p.sy + body_h * 0.58),
                (p.cx + side * p.sw * 0.85, p.sy + body_h * 0.3)]
    dx = p.height * swing
    return [shoulder, (p.cx + side * p.sw * 1.08 + dx * 0.4, p.sy + body_h * 0.52),
            (p.cx + side * p.sw * 1.12 + dx, p.hy + body_h * 0.12)]


def _side_arm_points(p: Person, pose: str, sign: float) -> list[tuple[float, float]]:
    body_h = p.hy - p.sy
    shoulder = (p.cx, p.sy + p.hh * 0.15)
    if pose == "hold":
        return [shoulder, (p.cx + p.sw * 0.5, p.sy + body_h * 0.6), (p.cx + p.sw * 1.4, p.sy + body_h * 0.5)]
    dx = p.height * p.swing * sign * 0.6
    return [shoulder, (p.cx + dx * 0.4, p.sy + body_h * 0.52), (p.cx + dx, p.hy + body_h * 0.1)]


def _arm(d: ImageDraw.ImageDraw, pts: list[tuple[float, float]], sleeve: RGB, skin: RGB,
         long: bool, width: float, cut: float, hand: bool = True) -> None:
    """Draw an arm; the sleeve covers the first ``cut`` of its length, skin the rest."""
    (x0, y0), (x1, y1), (x2, y2) = pts
    lw = _w(width)
    d.line((x0, y0, x1, y1, x2, y2), fill=skin, width=lw, joint="curve")
    if long:
        d.line((x0, y0, x1, y1, x2, y2), fill=sleeve, width=lw, joint="curve")
    else:
        d.line((x0, y0, x0 + (x1 - x0) * cut, y0 + (y1 - y0) * cut), fill=sleeve, width=_w(width * 1.25))
    d.ellipse((x0 - width * 0.62, y0 - width * 0.62, x0 + width * 0.62, y0 + width * 0.62), fill=sleeve)
    if hand:
        d.ellipse((x2 - width * 0.55, y2 - width * 0.55, x2 + width * 0.55, y2 + width * 0.55), fill=skin)


def _arms(d: ImageDraw.ImageDraw, p: Person, a: dict[str, str], view: str,
          carry: tuple[int, bool], rs: np.random.Generator) -> None:
    long = a["sleeve"] == "long"
    cut = rs.uniform(0.35, 0.75) if not long else 1.0
    width = p.sw * 0.36 if view != "side" else p.sw * 0.6
    hold = a["holds_objects"] == "yes"
    bag_side, crook = carry[0], a["handbag"] == "yes" and carry[1]
    if view == "side":
        far = _side_arm_points(p, "hold" if hold else "free", -1.0)
        d.line([q for q in far], fill=shade(p.upper if long else p.skin, 0.7), width=_w(width * 0.9))
        near = _side_arm_points(p, "hold" if hold else "free", 1.0)
        _arm(d, near, p.upper, p.skin, long, width, cut)
        return
    for side in (-1, 1):
        pose = "hold" if hold else "free"
        if crook and side == bag_side:
            pose = "crook"
        pts = _arm_points(p, side, pose, p.swing * side)
        if view == "back" and pose == "hold":  # hands in front of the body, hidden
            pts = [pts[0], pts[1], (p.cx + side * p.sw * 0.95, pts[2][1])]
        _arm(d, pts, p.upper, p.skin, long, width, cut, hand=not (view == "back" and pose == "hold"))


def _backpack_behind(d: ImageDraw.ImageDraw, p: Person, col: RGB, view: str) -> None:
    body_h = p.hy - p.sy
    if view == "side":  # the pack sticks out behind the back (left, before any flip)
        depth = p.sw * 1.3
        box = (p.cx - p.sw - depth, p.sy + body_h * 0.02, p.cx - p.sw * 0.6, p.sy + body_h * 0.7)
        d.rounded_rectangle(box, radius=depth * 0.3, fill=col)
    else:  # only the top and the edges show around the shoulders
        d.rounded_rectangle((p.cx - p.sw * 1.12, p.sy - p.hh * 0.12, p.cx + p.sw * 1.12, p.sy + body_h * 0.7),
                            radius=p.sw * 0.3, fill=col)


def _backpack_straps(d: ImageDraw.ImageDraw, p: Person, col: RGB, view: str) -> None:
    body_h = p.hy - p.sy
    wid = _w(p.sw * (0.2 if view == "front" else 0.3))
    strap = shade(col, 0.8)
    if view == "side":
        d.line((p.cx + p.sw * 0.3, p.sy, p.cx + p.sw * 0.55, p.sy + body_h * 0.5, p.cx - p.sw * 0.8,
                p.sy + body_h * 0.6), fill=strap, width=wid)
        return
    for side in (-1, 1):
        d.line((p.cx + side * p.sw * 0.5, p.sy, p.cx + side * p.sw * 0.58, p.sy + body_h * 0.62),
               fill=strap, width=wid)


def _backpack_back(d: ImageDraw.ImageDraw, p: Person, col: RGB) -> None:
    body_h = p.hy - p.sy
    box = (p.cx - p.sw * 0.75, p.sy + body_h * 0.02, p.cx + p.sw * 0.75, p.sy + body_h * 0.78)
    d.rounded_rectangle(box, radius=p.sw * 0.25, fill=col)
    d.line((box[0], box[1] + body_h * 0.45, box[2], box[1] + body_h * 0.45), fill=shade(col, 0.7),
           width=_w(p.sw * 0.05))


def _shoulder_bag(d: ImageDraw.ImageDraw, p: Person, col: RGB, view: str, rng: np.random.Generator) -> None:
    """A strap across the torso (or down one side) and a bag at the hip."""
    body_h = p.hy - p.sy
    side = -1 if rng.random() < 0.5 else 1
    across = view == "side" or rng.random() < 0.65
    bw, bh = p.height * rng.uniform(0.07, 0.12), p.height * rng.uniform(0.06, 0.1)
    if view == "side":
        bx, by = p.cx + p.sw * rng.uniform(-0.8, 0.2), p.hy + body_h * rng.uniform(-0.1, 0.1)
        start = (p.cx + p.sw * 0.1, p.sy)
    elif across:
        bx, by = p.cx + side * p.sw * 1.05, p.hy + body_h * rng.uniform(-0.1, 0.12)
        start = (p.cx - side * p.sw * 0.6, p.sy)
    else:
        bx, by = p.cx + side * p.sw * 1.25, p.hy + body_h * rng.uniform(-0.2, 0.05)
        start = (p.cx + side * p.sw * 0.7, p.sy)
    strap = shade(col, 0.7) if rng.random() < 0.6 else (25, 25, 25)
    d.line((start[0], start[1], bx, by - bh / 2), fill=strap, width=_w(p.sw * 0.1))
    d.rounded_rectangle((bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2), radius=bw * 0.15, fill=col)
    d.line((bx - bw / 2, by - bh * 0.15, bx + bw / 2, by - bh * 0.15), fill=shade(col, 0.75), width=1)


def _handbag(d: ImageDraw.ImageDraw, p: Person, view: str, hold: bool, carry: tuple[int, bool],
             rng: np.random.Generator) -> None:
    """A bag held by its handles: hanging from a hand at the side, or in the elbow's crook."""
    side, crook = carry
    body_h = p.hy - p.sy
    col = jitter(pick(rng, ((25, 20, 20), (120, 40, 40), (150, 110, 70), (210, 200, 180),
                            (60, 40, 30), (180, 60, 90), (40, 40, 70))), rng, 15)
    bw, bh = p.height * rng.uniform(0.08, 0.13), p.height * rng.uniform(0.07, 0.11)
    if view == "side":
        hx, hy = _side_arm_points(p, "hold" if hold else "free", 1.0)[2 if not hold else 1]
    elif crook:
        hx, hy = _arm_points(p, side, "crook", 0)[1]
        hx += side * p.sw * 0.1
    else:
        hx, hy = _arm_points(p, side, "free", p.swing * side)[2]
    top = hy + bh * 0.3
    d.arc((hx - bw * 0.3, hy - bh * 0.15, hx + bw * 0.3, top + bh * 0.3), 180, 360,
          fill=shade(col, 0.7), width=_w(p.sw * 0.07))
    d.polygon([(hx - bw * 0.42, top), (hx + bw * 0.42, top), (hx + bw * 0.5, top + bh),
               (hx - bw * 0.5, top + bh)], fill=col)


def _held_object(d: ImageDraw.ImageDraw, p: Person, view: str, rng: np.random.Generator) -> None:
    """Something carried in front of the body with both hands (a box, a bag, a bundle)."""
    body_h = p.hy - p.sy
    col = jitter(pick(rng, ((200, 170, 120), (160, 120, 70), (230, 230, 225), (60, 90, 160),
                            (190, 60, 50), (40, 40, 40), (90, 150, 80))), rng, 15)
    ow = p.sw * rng.uniform(1.1, 1.7) * (0.7 if view == "side" else 1.0)
    oh = body_h * rng.uniform(0.3, 0.55)
    if view == "side":
        ox, oy = p.cx + p.sw * 1.05 + ow * 0.45, p.sy + body_h * 0.55
    elif view == "back":  # behind the torso: its ends show at both sides
        ox, oy, ow = p.cx, p.sy + body_h * 0.7, p.sw * rng.uniform(2.5, 3.0)
    else:
        ox, oy = p.cx, p.sy + body_h * 0.72
    shape = int(rng.integers(3))
    box = (ox - ow / 2, oy - oh / 2, ox + ow / 2, oy + oh / 2)
    if shape == 0:
        d.rectangle(box, fill=col)
        d.line((box[0], oy, box[2], oy), fill=shade(col, 0.7), width=1)
    elif shape == 1:
        d.rounded_rectangle(box, radius=ow * 0.3, fill=col)
    else:
        d.ellipse(box, fill=col)
    r = p.sw * (0.2 if view == "front" else 0.3)
    hands = [(p.cx + side * p.sw * 0.55, p.sy + body_h * 0.72) for side in (-1, 1)] if view == "front" \
        else [(box[0] + ow * 0.3, oy - oh * 0.1)] if view == "side" else []
    for hx, hy in hands:  # hands over the object
        d.ellipse((hx - r, hy - r, hx + r, hy + r), fill=p.skin)


def _head(d: ImageDraw.ImageDraw, p: Person, view: str) -> None:
    hx, hy, hw, hh = p.hcx, p.hcy, p.hw, p.hh
    neck_w = hw * 0.22
    d.rectangle((p.cx - neck_w, hy + hh * 0.3, p.cx + neck_w, p.sy + hh * 0.05), fill=shade(p.skin, 0.9))
    box = (hx - hw / 2, hy - hh / 2, hx + hw / 2, hy + hh / 2)
    bald = p.hair_style == "bald"
    if view == "back":
        d.ellipse(box, fill=p.skin if bald else p.hair)
        if bald:
            d.chord(box, 20, 160, fill=p.hair)
        elif p.hair_style == "ponytail":
            d.ellipse((hx - hw * 0.15, hy + hh * 0.1, hx + hw * 0.15, hy + hh * 0.75), fill=p.hair)
        return
    if view == "side":  # facing right: hair at the back, nose and one eye at the front
        d.ellipse(box, fill=p.skin)
        if not bald:
            d.chord((box[0], box[1], box[2], box[3] - hh * 0.25), 150, 360, fill=p.hair)
            d.pieslice(box, 90, 270, fill=p.hair)
            if p.hair_style == "ponytail":
                d.ellipse((hx - hw * 0.85, hy - hh * 0.1, hx - hw * 0.35, hy + hh * 0.2), fill=p.hair)
        else:
            d.chord(box, 120, 240, fill=p.hair)
        d.polygon([(hx + hw * 0.45, hy - hh * 0.05), (hx + hw * 0.62, hy + hh * 0.12),
                   (hx + hw * 0.45, hy + hh * 0.18)], fill=p.skin)
        e = hw * 0.07
        d.ellipse((hx + hw * 0.22 - e, hy - e, hx + hw * 0.22 + e, hy + e), fill=(30, 25, 25))
        return
    d.ellipse(box, fill=p.hair if not bald else p.skin)  # front
    face = (hx - hw * 0.42, hy - hh * (0.28 if not bald else 0.5), hx + hw * 0.42, hy + hh * 0.5)
    d.ellipse(face, fill=p.skin)
    if bald:
        d.chord(box, 150, 210, fill=p.hair)
        d.chord(box, 330, 30, fill=p.hair)
    e = hw * 0.07
    for s in (-1, 1):
        ex = hx + s * hw * 0.19
        d.ellipse((ex - e, hy + hh * 0.02 - e, ex + e, hy + hh * 0.02 + e), fill=(30, 25, 25))
    d.line((hx - hw * 0.1, hy + hh * 0.3, hx + hw * 0.1, hy + hh * 0.3), fill=shade(p.skin, 0.6), width=1)


def _glasses(d: ImageDraw.ImageDraw, p: Person, view: str, rng: np.random.Generator) -> None:
    """Two lenses and a bridge from the front, one lens and a temple in profile, temples from behind."""
    hx, hy, hw, hh = p.hcx, p.hcy, p.hw, p.hh
    frame = jitter(pick(rng, ((15, 15, 15), (40, 35, 30), (90, 70, 40), (150, 150, 160))), rng, 8)
    sun = rng.random() < 0.4
    lw, lh = hw * rng.uniform(0.2, 0.27), hh * rng.uniform(0.1, 0.15)
    ey = hy + hh * 0.02
    line = _w(hw * 0.06)
    if view == "front":
        for s in (-1, 1):
            ex = hx + s * hw * 0.2
            d.rectangle((ex - lw / 2, ey - lh / 2, ex + lw / 2, ey + lh / 2), outline=frame,
                        fill=(20, 20, 25) if sun else None, width=line)
        d.line((hx - hw * 0.2 + lw / 2, ey, hx + hw * 0.2 - lw / 2, ey), fill=frame, width=line)
    elif view == "side":
        ex = hx + hw * 0.28
        d.rectangle((ex - lw / 2, ey - lh / 2, ex + lw / 2, ey + lh / 2), outline=frame,
                    fill=(20, 20, 25) if sun else None, width=line)
        d.line((ex - lw / 2, ey, hx - hw * 0.05, ey - hh * 0.03), fill=frame, width=line)
    else:  # the temples show just outside the head
        for s in (-1, 1):
            d.line((hx + s * hw * 0.46, ey, hx + s * hw * 0.56, ey + hh * 0.04), fill=frame, width=line)


def _hat(d: ImageDraw.ImageDraw, p: Person, view: str, rng: np.random.Generator) -> None:
    """A cap, a beanie or a brimmed hat on top of the head."""
    hx, hy, hw, hh = p.hcx, p.hcy, p.hw, p.hh
    col = cloth(rng) if rng.random() < 0.7 else jitter((30, 30, 35), rng, 10)
    kind = int(rng.integers(3))
    top = hy - hh * rng.uniform(0.56, 0.62)
    crown = (hx - hw * 0.54, top, hx + hw * 0.54, hy + hh * (0.15 if kind == 1 else 0.05))
    d.chord(crown, 180, 360, fill=col)
    band = hy - hh * rng.uniform(0.12, 0.2)
    d.rectangle((hx - hw * 0.54, band, hx + hw * 0.54, band + hh * 0.1), fill=shade(col, 0.85))
    if kind == 0:  # cap: a peak forward (to the right in profile)
        if view == "side":
            peak = [(hx + hw * 0.3, band), (hx + hw * 0.9, band + hh * 0.08),
                    (hx + hw * 0.3, band + hh * 0.1)]
            d.polygon(peak, fill=shade(col, 0.8))
        elif view == "front":
            d.ellipse((hx - hw * 0.55, band, hx + hw * 0.55, band + hh * 0.16), fill=shade(col, 0.8))
    elif kind == 2:  # brim all around
        d.ellipse((hx - hw * 0.85, band, hx + hw * 0.85, band + hh * 0.14), fill=shade(col, 0.8))
