"""glyphs67: an offline synthetic 67-class image dataset of rendered characters.

Why this exists: the product's headline benchmark is MIT Indoor67 (67 scene
classes), which cannot be downloaded on offline machines (CI, sandboxes).
glyphs67 is a stand-in with the same number of classes that is generated in a
few seconds from the TrueType fonts bundled with matplotlib, so active-learning
simulations and tests run anywhere without network access or data files.

Classes: digits 0-9, upper-case A-Z, lower-case a-z and five symbols
(& @ # % ?).  Label names ('digit_0', 'upper_A', 'lower_a', 'sym_at', ...) are
plain identifiers that stay distinct when compared case-insensitively (some
labelling back ends, e.g. Azure ML, fold case).

Rendering: every (font, character) pair is rasterised once with FreeType at
high resolution, placed relative to the font's baseline and em box (not
tight-cropped, so 'o' stays smaller and lower than 'O', as in real text) and
cached.  Each sample then gets a random stroke weight, a random affine warp
(rotation, scale, shear, translation), area downsampling,
a random contrast and Gaussian pixel noise.  Images are white glyphs on a
black background, uint8, size x size.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.ft2font import FT2Font
from scipy import ndimage

__all__ = ["GLYPH_CHARS", "GLYPH_CLASSES", "render_glyphs67"]

_SYMBOLS: tuple[tuple[str, str], ...] = (
    ("&", "ampersand"),
    ("@", "at"),
    ("#", "hash"),
    ("%", "percent"),
    ("?", "question"),
)


def _class_table() -> tuple[tuple[str, str], ...]:
    digits = [(c, f"digit_{c}") for c in "0123456789"]
    upper = [(chr(o), f"upper_{chr(o)}") for o in range(ord("A"), ord("Z") + 1)]
    lower = [(chr(o), f"lower_{chr(o)}") for o in range(ord("a"), ord("z") + 1)]
    symbols = [(c, f"sym_{name}") for c, name in _SYMBOLS]
    return tuple(digits + upper + lower + symbols)


_TABLE = _class_table()
GLYPH_CHARS: tuple[str, ...] = tuple(c for c, _ in _TABLE)
GLYPH_CLASSES: tuple[str, ...] = tuple(name for _, name in _TABLE)

# Text fonts shipped with matplotlib whose ASCII code points map to the usual
# glyphs (the cmsy/cmex/cmmi and STIX size/NonUni fonts are symbol fonts).
_FONT_FILES: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
)

_SUPERSAMPLE = 4  # render at 4x the working canvas, then area-average down
_EM_FRACTION = 0.72  # em size relative to the canvas side
_ASCENT_EM = 0.76  # vertical extent kept above the baseline, in em
_DESCENT_EM = 0.24  # vertical extent kept below the baseline, in em


def _font_dir() -> Path:
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _render_char(font: FT2Font, char: str, canvas: int) -> np.ndarray | None:
    """Rasterise one character on a canvas x canvas float32 image in [0, 1].

    The baseline sits at a fixed row so relative glyph heights are kept; the
    ink is centred horizontally.  Returns None when the font has no glyph.
    """
    if font.get_char_index(ord(char)) == 0:
        return None
    font.clear()
    font.set_text(char, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    glyph = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    if glyph.size == 0 or glyph.max() <= 0.0:
        return None
    em = _EM_FRACTION * canvas
    baseline_row = canvas / 2.0 + (_ASCENT_EM - _DESCENT_EM) / 2.0 * em
    glyph_baseline = glyph.shape[0] - font.get_descent() / 64.0
    top = round(baseline_row - glyph_baseline)
    cols = np.flatnonzero(glyph.max(axis=0) > 0)
    glyph = glyph[:, cols[0] : cols[-1] + 1]
    left = round((canvas - glyph.shape[1]) / 2.0)
    out = np.zeros((canvas, canvas), dtype=np.float32)
    _paste(out, glyph, top, left)
    return out


def _paste(dst: np.ndarray, src: np.ndarray, top: int, left: int) -> None:
    """Copy src into dst at (top, left), clipping at the borders."""
    h, w = dst.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + src.shape[0], h), min(left + src.shape[1], w)
    if y1 > y0 and x1 > x0:
        dst[y0:y1, x0:x1] = src[y0 - top : y1 - top, x0 - left : x1 - left]


def _area_downsample(img: np.ndarray, factor: int) -> np.ndarray:
    h, w = img.shape[-2] // factor, img.shape[-1] // factor
    return img.reshape(*img.shape[:-2], h, factor, w, factor).mean(axis=(-3, -1))


@functools.lru_cache(maxsize=8)
def _templates(work: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """Per class, the stack of (font x stroke-weight) templates at work x work.

    Stroke weights: regular, thinner (grey erosion) and bolder (grey dilation).
    """
    hi = work * _SUPERSAMPLE
    em_px = _EM_FRACTION * hi
    fonts = []
    for name in _FONT_FILES:
        path = _font_dir() / name
        if path.exists():
            font = FT2Font(str(path))
            font.set_size(em_px, 72)  # 72 dpi: 1 point == 1 pixel
            fonts.append(font)
    if not fonts:
        raise RuntimeError(f"no usable TrueType fonts found in {_font_dir()}")
    footprint = np.ones((3, 3), dtype=bool)
    per_class = []
    for char in GLYPH_CHARS:
        stack = []
        for font in fonts:
            hi_img = _render_char(font, char, hi)
            if hi_img is None:
                continue
            base = _area_downsample(hi_img, _SUPERSAMPLE)
            stack.append(base)
            stack.append(ndimage.grey_erosion(base, footprint=footprint) * 0.5 + base * 0.5)
            stack.append(ndimage.grey_dilation(base, footprint=footprint))
        if not stack:
            raise RuntimeError(f"no bundled font renders {char!r}")
        per_class.append(tuple(stack))
    return tuple(per_class)


def _random_affine(rng: np.random.Generator, work: int) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset mapping output pixel coords to template coords."""
    angle = np.deg2rad(rng.uniform(-12.0, 12.0))
    scale = rng.uniform(0.9, 1.1)
    aspect = rng.uniform(0.95, 1.05)
    shear = rng.uniform(-0.15, 0.15)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    shearing = np.array([[1.0, 0.0], [shear, 1.0]])  # (row, col) coords: x += shear*y
    scaling = np.diag([scale * aspect, scale / aspect])
    forward = rotation @ shearing @ scaling
    inverse = np.linalg.inv(forward)
    shift = rng.uniform(-0.06, 0.06, size=2) * work  # a few output pixels
    centre = np.full(2, (work - 1) / 2.0)
    offset = centre - inverse @ (centre + shift)
    return inverse, offset


def _render_sample(template: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Warp one template, area-downsample by 2 and add contrast and noise."""
    work = template.shape[0]
    matrix, offset = _random_affine(rng, work)
    warped = ndimage.affine_transform(
        template, matrix, offset=offset, output_shape=template.shape, order=1, mode="constant"
    )
    small = _area_downsample(warped, 2)
    contrast = rng.uniform(0.7, 1.0)
    background = rng.uniform(0.0, 0.12)
    noise_sd = rng.uniform(0.0, 0.08)
    img = background + (contrast - background) * small
    img = img + rng.normal(0.0, noise_sd, size=img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def render_glyphs67(n_per_class: int, *, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Render a shuffled, balanced glyphs67 sample.

    Args:
        n_per_class: images per class (>= 1).
        seed: seed of every random choice; the same seed gives byte-identical
            arrays.
        size: side of the square output images in pixels (>= 8).

    Returns:
        images: uint8 array (67 * n_per_class, size, size), white glyph on black.
        labels: int64 array of indices into GLYPH_CLASSES.
    """
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an integer >= 1, got {n_per_class!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    n_per_class, size = int(n_per_class), int(size)
    templates = _templates(2 * size)
    rng = np.random.default_rng(seed)
    n_classes = len(GLYPH_CLASSES)
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), n_per_class)
    images = np.empty((labels.size, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        stack = templates[label]
        images[i] = _render_sample(stack[rng.integers(len(stack))], rng)
    order = rng.permutation(labels.size)
    return images[order], labels[order]
