"""Drawing helpers shared by the pedestrian and vehicle renderers.

Everything here is nuisance: colours, backgrounds, lighting, blur, noise and occlusion carry no
label. All randomness comes from the ``rng`` argument so a caller that seeds one generator per
image gets the same pixels every time. Figures are drawn on a canvas twice the output size and
reduced at the end, which gives cheap anti-aliasing.
"""

from __future__ import annotations


import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]

#: Clothing and clutter hues: a broad, muted palette, as street clothes are (name only for reading).
PALETTE: tuple[RGB, ...] = (
    (20, 20, 22), (45, 45, 50), (90, 90, 95), (150, 150, 150), (215, 215, 210), (240, 240, 235),
    (30, 40, 80), (50, 70, 130), (90, 130, 190), (120, 30, 35), (190, 40, 45), (220, 110, 120),
    (40, 80, 45), (90, 130, 70), (150, 120, 80), (110, 80, 50), (70, 50, 35), (200, 180, 140),
    (230, 200, 60), (220, 120, 40), (110, 60, 130), (170, 140, 200), (60, 140, 150), (25, 30, 45),
)
SKIN: tuple[RGB, ...] = (
    (238, 205, 180), (226, 185, 150), (205, 160, 125), (180, 130, 95), (140, 95, 65), (95, 65, 45),
)


def clamp(c: float) -> int:
    return int(min(255, max(0, round(c))))


def jitter(color: RGB, rng: np.random.Generator, amount: float = 18) -> RGB:
    """``color`` with independent per-channel jitter of about ``amount`` levels."""
    d = rng.normal(0, amount, 3)
    return (clamp(color[0] + d[0]), clamp(color[1] + d[1]), clamp(color[2] + d[2]))


def shade(color: RGB, factor: float) -> RGB:
    """Brighter (>1) or darker (<1) version of ``color``."""
    return (clamp(color[0] * factor), clamp(color[1] * factor), clamp(color[2] * factor))


def pick(rng: np.random.Generator, items):
    """One element of a sequence, chosen by ``rng``."""
    return items[int(rng.integers(len(items)))]


def cloth(rng: np.random.Generator) -> RGB:
    """A random clothing colour."""
    return jitter(pick(rng, PALETTE), rng, 14)


def contrasting(color: RGB, rng: np.random.Generator, min_dist: float = 120) -> RGB:
    """A clothing colour clearly different from ``color`` (so patterns are visible)."""
    for _ in range(12):
        c = cloth(rng)
        if sum((a - b) ** 2 for a, b in zip(c, color)) ** 0.5 >= min_dist:
            return c
    return (235, 235, 230) if sum(color) < 380 else (25, 25, 30)


def desaturate(color: RGB, amount: float) -> RGB:
    """Blend ``color`` toward its own grey level by ``amount`` in [0, 1]."""
    g = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return tuple(clamp(c + (g - c) * amount) for c in color)  # type: ignore[return-value]


# --------------------------------------------------------------------------- backgrounds

def street_background(size: tuple[int, int], rng: np.random.Generator, *, dark: float = 0.0) -> Image.Image:
    """A cluttered street-ish backdrop: wall/pavement split, a few blocks, poles and stripes.

    ``dark`` in [0, 1] pulls everything toward night-time greys (surveillance cameras).
    """
    w, h = size
    base = jitter(pick(rng, ((120, 120, 115), (150, 145, 135), (95, 100, 105), (170, 165, 160),
                             (110, 105, 90), (80, 85, 80), (140, 150, 160))), rng, 20)
    base = shade(base, 1.0 - 0.5 * dark)
    img = Image.new("RGB", size, base)
    d = ImageDraw.Draw(img)
    horizon = h * rng.uniform(0.3, 0.85)
    ground = shade(jitter(base, rng, 25), rng.uniform(0.7, 1.15))
    d.rectangle((0, horizon, w, h), fill=ground)
    for _ in range(int(rng.integers(2, 7))):  # blocks: shop fronts, cars, windows, other people
        x0, y0 = rng.uniform(-0.3, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        bw, bh = rng.uniform(0.1, 0.7) * w, rng.uniform(0.05, 0.4) * h
        col = shade(cloth(rng), rng.uniform(0.5, 1.0) * (1.0 - 0.5 * dark))
        d.rectangle((x0, y0, x0 + bw, y0 + bh), fill=desaturate(col, rng.uniform(0.2, 0.8)))
    for _ in range(int(rng.integers(0, 3))):  # poles and lane lines
        x = rng.uniform(0, w)
        d.line((x, rng.uniform(0, h * 0.5), x + rng.uniform(-0.1, 0.1) * w, h),
               fill=shade(base, rng.uniform(0.4, 1.4)), width=int(rng.integers(1, max(2, w // 20))))
    return img


def plain_background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A clean studio/showroom-like backdrop with a soft vertical gradient (web photos)."""
    w, h = size
    top = jitter(pick(rng, ((235, 235, 235), (210, 220, 235), (190, 200, 190), (245, 240, 230),
                            (120, 160, 210), (170, 170, 175))), rng, 12)
    bottom = shade(jitter(top, rng, 10), rng.uniform(0.6, 0.95))
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    column = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    # A one-pixel-wide column stretched sideways: much cheaper than filling every pixel.
    return Image.fromarray(column.astype(np.uint8), "RGB").resize((w, h), Image.Resampling.NEAREST)


def occlude(img: Image.Image, rng: np.random.Generator, max_frac: float = 0.35) -> None:
    """Cover one side or the bottom of ``img`` with a foreground object (a pole, a car, a person)."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    col = shade(cloth(rng), rng.uniform(0.4, 1.0))
    frac = rng.uniform(0.1, max_frac)
    side = int(rng.integers(3))
    if side == 0:
        d.rectangle((0, 0, w * frac, h), fill=col)
    elif side == 1:
        d.rectangle((w * (1 - frac), 0, w, h), fill=col)
    else:
        d.rectangle((0, h * (1 - frac * 0.7), w, h), fill=col)


# --------------------------------------------------------------------------- finishing

def finish(canvas: Image.Image, size: tuple[int, int], rng: np.random.Generator, *,
           gain: float, cast: float, gradient: float, blur: float, noise: float,
           saturation: float = 1.0, lowres: float = 1.0) -> Image.Image:
    """Reduce ``canvas`` to ``size`` and apply the camera: light, blur, noise, resolution loss.

    ``gain`` scales brightness, ``cast`` tints (per-channel spread), ``gradient`` darkens one
    side of the frame, ``blur`` is a box-blur radius in output pixels, ``noise`` a sensor-noise
    standard deviation in grey levels, ``saturation`` < 1 washes colours out and ``lowres`` < 1
    downsamples then upsamples (a far-away or cheap camera).
    """
    reduce = Image.Resampling.BOX if canvas.width >= 2 * size[0] else Image.Resampling.BILINEAR
    img = canvas.resize(size, reduce)
    if lowres < 0.999:
        small = (max(8, round(size[0] * lowres)), max(8, round(size[1] * lowres)))
        img = img.resize(small, Image.Resampling.BILINEAR).resize(size, Image.Resampling.BILINEAR)
    if blur > 0.05:
        img = img.filter(ImageFilter.BoxBlur(blur))  # at these radii as good as Gaussian, 3x cheaper
    a = np.asarray(img, dtype=np.float32)
    if saturation != 1.0:
        grey = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114  # no BLAS threads
        a = grey[..., None] + (a - grey[..., None]) * saturation
    w, h = size
    light = gain * (1.0 + rng.normal(0, cast, 3)).astype(np.float32)
    direction = int(rng.integers(4))
    ramp = np.linspace(1.0 - gradient, 1.0, w if direction < 2 else h, dtype=np.float32)
    if direction % 2:
        ramp = ramp[::-1]
    ramp = ramp[None, :, None] if direction < 2 else ramp[:, None, None]
    a = a * light * ramp
    if noise > 0:  # luminance noise: one draw per pixel, not per channel (a third of the cost)
        a += rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(noise)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
