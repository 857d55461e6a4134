"""Drawing many figures quickly with matplotlib's Agg renderer: a canvas whose renderer keeps
the glyph bitmaps it has rendered and lays out text from what it has learnt, and a quick PNG
writer (ISA-L's deflate where installed).

matplotlib 3.11 renders every glyph of every text with FreeType each time the text is drawn
(about 50 us a glyph, most of a small figure's drawing time). :class:`GlyphCachingCanvas`
gives figures a renderer that keeps each bitmap, keyed by everything FreeType's result depends
on: font, size, resolution, glyph, hinting, antialiasing, rotation and the glyph's position
within its pixel (1/64 px). A glyph moved by whole pixels is the same bitmap moved, so the
figure's pixels are exactly those of the stock renderer. Where matplotlib draws text another
way (before 3.11), the renderer is the stock one.

Laying text out costs as much again: matplotlib 3.11 shapes every string with libraqm and
HarfBuzz, which load each glyph with FreeType's hinting (about 30 us a character), once to
measure the string and once to draw it, and a report figure's titles are new strings each time
(names and counts). For the fonts matplotlib ships (DejaVu), printable ASCII text is laid out
glyph after glyph: each glyph sits where the one before it sits plus an offset that depends on
the pair of characters alone (the first's hinted advance and the pair's kerning, in FreeType's
1/64 px), and the string's width is its last glyph's position plus that glyph's advance, its
height and descent those of the glyphs' boxes. The renderer learns each pair's offset from the
strings it lays out with matplotlib (a string with a pair not seen yet is laid out by
matplotlib, as before) and never one that HarfBuzz joined into a ligature ("fi", "ffl"): a
string holding such a pair is always laid out by matplotlib. The positions, widths, heights
and descents are those matplotlib computes, to the 1/64 px (``tests/test_report_figures.py``
compares them on many strings).

matplotlib also finds the font and reads its OS/2 (or hhea) table for every text it lays out, to
get the line height (a tick label is laid out twice per drawing); the renderer answers that
from what it keeps per font, size and resolution, computed by the same steps (matplotlib 3.11's
``_get_font_height_metrics`` hook; the figure's resolution, as matplotlib reads it).

Opaque black text over opaque grey (a title on the figure's white) is blended glyph after glyph
by a table of what Agg makes of each grey under each coverage, read from Agg itself, instead
of one ``draw_text_image`` call per glyph; anything else is drawn by Agg as before.

Many opaque black markers over opaque grey (a raster's ticks on the axes' white) are stamped:
Agg renders a marker's coverage once and blends that same stamp at each marker's whole-pixel
position, one marker after another, so what it makes of each grey at each pixel of the stamp
is read from Agg once per marker (drawn over every grey) and applied with numpy to all the
markers, in Agg's order where they overlap, instead of Agg blending them one by one.

Importing this module imports matplotlib: import it inside the functions that draw.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg, get_hinting_flag
from matplotlib.font_manager import fontManager, get_font
from matplotlib.ft2font import FT2Font

try:  # matplotlib >= 3.10 (where text is drawn glyph by glyph: CACHES_GLYPHS)
    from matplotlib.ft2font import RenderMode
except ImportError:  # pragma: no cover
    RenderMode = None

try:  # ISA-L's deflate: zlib's format, ~10x faster than zlib at the same size for figures
    from isal.isal_zlib import compress as _deflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib where it has no wheel
    from zlib import compress as _deflate

__all__ = ["GlyphCachingCanvas", "GlyphCachingRenderer", "png_bytes"]

#: Glyph bitmaps kept per process (each some 100 bytes to a few kB); the cache is emptied
#: when full.
MAX_GLYPHS = 20_000

_glyphs: dict[tuple, tuple[np.ndarray, int, int]] = {}

#: Whether text is laid out from what was learnt (False: by matplotlib, for comparisons).
LEARN_LAYOUT = True

#: Whether opaque black text over grey is blended by table (False: glyph by glyph by Agg).
BLEND_TEXT = True

#: Whether many opaque black markers over grey are stamped by table (False: drawn by Agg).
STAMP_MARKERS = True

#: Fewer markers than this in one call are drawn by Agg (learning a stamp costs ~0.5 ms).
MIN_STAMPED = 64

#: Fonts, sizes and resolutions whose text layout is learnt, each with at most MAX_PAIRS
#: character pairs (the learnt layouts are emptied when full).
MAX_LAYOUTS = 64
MAX_PAIRS = 20_000

#: The fonts whose layout is learnt: those matplotlib ships (DejaVu, no contextual forms
#: beyond the ligatures the pairs are checked for).
_SHIPPED_FONTS = str(Path(matplotlib.get_data_path(), "fonts")) + "/"


class _Layout:
    """What is learnt of one font at one size and resolution: the offset (1/64 px) of each
    pair of characters seen, and each character's glyph, advance and vertical extent."""

    def __init__(self, font: Any, size: float, dpi: float, flags: Any):
        self.font, self.size, self.dpi, self.flags = font, size, dpi, flags
        self.pairs: dict[str, int] = {}
        self.joined: set[str] = set()  # pairs laid out as one glyph (ligatures), or odd
        self.chars: dict[str, tuple[int, int, int, int]] = {}  # glyph, advance, ymin, ymax

    def learn(self, s: str, items: list) -> bool:
        """Keep the pair offsets of ``s`` as laid out by matplotlib (``items``); False (nothing
        kept) if a glyph is not one character's own (a ligature, another font) or off the
        baseline."""
        if len(items) != len(s):
            return False
        xs = []
        for ch, item in zip(s, items, strict=True):
            x = item.x * 64
            if item.char != ch or item.ft_object is not self.font or item.y or x != int(x):
                return False
            xs.append(int(x))
        if xs[0]:
            return False
        if len(self.pairs) >= MAX_PAIRS:
            self.pairs.clear()
        for i in range(len(s) - 1):
            self.pairs[s[i : i + 2]] = xs[i + 1] - xs[i]
        return True

    def learn_pairs(self, s: str) -> None:
        """Lay out each pair of ``s`` not learnt on its own: learn it, or mark it as one that
        matplotlib must lay out (HarfBuzz joins it)."""
        for i in range(len(s) - 1):
            pair = s[i : i + 2]
            if pair not in self.pairs and pair not in self.joined:
                if not self.learn(pair, self.font._layout(pair, flags=self.flags)):
                    self.joined.add(pair)

    def joins(self, s: str) -> bool:
        """Whether ``s`` holds a pair that HarfBuzz joins."""
        return any(pair in s for pair in self.joined)

    def _char(self, ch: str) -> tuple[int, int, int, int]:
        info = self.chars.get(ch)
        if info is None:
            font = self.font
            glyph_index = font.get_char_index(ord(ch))
            font.set_size(self.size, self.dpi)  # also resets the transform
            glyph = font.load_glyph(glyph_index, flags=self.flags)
            _, ymin, _, ymax = glyph.bbox
            info = self.chars[ch] = (glyph_index, glyph.horiAdvance, ymin, ymax)
        return info

    def positions(self, s: str) -> list[int] | None:
        """Each glyph's position (1/64 px) in ``s``, or None if a pair was not learnt."""
        pairs = self.pairs
        x = 0
        xs = [0]
        for i in range(len(s) - 1):
            offset = pairs.get(s[i : i + 2])
            if offset is None:
                return None
            x += offset
            xs.append(x)
        return xs

    def metrics(self, s: str, xs: list[int]) -> tuple[float, float, float]:
        """Width, height and descent (px) of ``s``, as ``RendererAgg`` measures it."""
        infos = [self._char(ch) for ch in s]
        ymin = min(info[2] for info in infos)
        ymax = max(info[3] for info in infos)
        return (xs[-1] + infos[-1][1]) / 64.0, (ymax - ymin) / 64.0, -ymin / 64.0

    def glyphs(self, s: str) -> list[int]:
        """The glyph index of each character of ``s``."""
        return [self._char(ch)[0] for ch in s]


_layouts: dict[tuple, _Layout] = {}

#: What matplotlib's findfont depends on, besides the font properties.
_FONT_RC = (
    *(
        f"font.{key}"
        for key in "family style variant weight stretch size serif sans-serif cursive fantasy "
        "monospace".split()
    ),
    "text.hinting_factor",
    "text.kerning_factor",  # what get_font keys on besides the paths (3.11)
    "font.enable_last_resort",
)
_fonts: dict[tuple, Any] = {}


def _font(prop: Any) -> Any:
    """``get_font(fontManager._find_fonts_by_props(prop))``, kept by the properties' hash (as
    matplotlib keeps its font lookups) and everything else the lookup depends on."""
    # rcParams read as a dict (no deprecation checks: these keys have none), None if absent.
    rc = map(dict.get, itertools.repeat(matplotlib.rcParams, len(_FONT_RC)), _FONT_RC)
    key = (
        hash(prop),
        *[tuple(v) if v.__class__ is list else v for v in rc],
        os.getenv("MPL_IGNORE_SYSTEM_FONTS"),
        threading.get_ident(),  # as get_font: an FT2Font per thread
    )
    font = _fonts.get(key)
    if font is None:
        if len(_fonts) >= 256:
            _fonts.clear()
        font = _fonts[key] = get_font(fontManager._find_fonts_by_props(prop))
    return font


#: Whether a text's line height is read from what was kept of the font (False: matplotlib
#: looks the font and its tables up for each text, for comparisons).
KEEP_FONT_HEIGHTS = True

_font_heights: dict[tuple, tuple[float, float, float]] = {}


def _font_height_metrics(prop: Any, dpi: float) -> tuple[float, float, float]:
    """``(ascent, descent, line gap)`` (px) of the font of ``prop`` at ``dpi``, as matplotlib's
    ``Text._get_layout`` computes them from the font's OS/2 or hhea table, kept per font, size
    and resolution (matplotlib looks the font up and reads two tables for every text)."""
    font = _font(prop)
    fontsize = prop.get_size_in_points()
    key = (font, fontsize, dpi)
    metrics = _font_heights.get(key)
    if metrics is None:
        possible = [
            ("OS/2", "sTypoLineGap", "sTypoAscender", "sTypoDescender"),
            ("hhea", "lineGap", "ascent", "descent"),
        ]
        metrics = (None, None, None)
        for table_name, linegap_key, ascent_key, descent_key in possible:
            table = font.get_sfnt_table(table_name)
            if table is None:
                continue
            # The same steps as matplotlib 3.11's Text._get_layout (the same floats).
            units_per_em = font.get_sfnt_table("head")["unitsPerEm"]
            scale = 1 / units_per_em * fontsize * dpi / 72
            line_gap = table[linegap_key] * scale
            min_ascent = table[ascent_key] * scale
            min_descent = -table[descent_key] * scale
            metrics = (min_ascent, min_descent, line_gap)
            break
        if len(_font_heights) >= 256:
            _font_heights.clear()
        _font_heights[key] = metrics
    return metrics


_hinting_flags: dict[Any, Any] = {}


def _hinting_flag() -> tuple[Any, int]:
    """``get_hinting_flag()`` and its value (a key that hashes quicker than the enum), kept per
    value of ``rcParams["text.hinting"]`` (all it reads)."""
    value = dict.get(matplotlib.rcParams, "text.hinting")
    found = _hinting_flags.get((type(value), value))
    if found is None:
        flag = get_hinting_flag()
        found = _hinting_flags[type(value), value] = (flag, int(flag.value))
    return found


#: Whether this matplotlib draws text glyph by glyph through the method overridden below.
CACHES_GLYPHS = RenderMode is not None and all(
    (
        hasattr(RendererAgg, "_draw_text_glyphs_and_boxes"),
        hasattr(FT2Font, "_set_transform"),
        hasattr(FT2Font, "_render_glyph"),
        hasattr(FT2Font, "_layout"),
    )
)


class _Stamp:
    """What Agg's ``draw_markers`` does to the pixels around a marker's position: for each
    pixel of the stamp (``rows``, ``cols``: offsets from the position), the grey it makes of
    each opaque grey (``powers[0][pixel, grey]``), and of the same grey under k markers at
    the same position (``powers[k - 1]``, made as needed)."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, table: np.ndarray):
        self.rows, self.cols = rows, cols
        self.powers = table[np.newaxis]  # (k, pixel, grey)
        self.settled = False  # whether one more marker changes nothing any more
        self._made_of: np.ndarray | None = None

    @property
    def most(self) -> int:
        """Markers on one position that :attr:`powers` goes up to."""
        return len(self.powers)

    def made_of(self, most: int) -> np.ndarray:
        """``powers`` up to ``most`` markers (or to where one more changes nothing), each
        grey as the opaque pixel it is, flat: ``[((k - 1) * pixels + pixel) * 256 + grey]``."""
        while len(self.powers) < most and not self.settled:
            last = self.powers[-1]
            more = np.take_along_axis(self.powers[0], last, axis=1)
            if np.array_equal(more, last):
                self.settled = True
            else:
                self.powers = np.concatenate([self.powers, more[np.newaxis]])
                self._made_of = None
        if self._made_of is None:
            self._made_of = _OPAQUE_GREY[self.powers].reshape(-1)
        return self._made_of


_stamps: dict[tuple, _Stamp | None] = {}

#: Stamps kept per process (each a few kB); emptied when full.
MAX_STAMPS = 256


def _stamp(dpi: float, gc: Any, marker_path: Any, marker_trans: Any, rgb_face: Any):
    """The :class:`_Stamp` of this marker (None if Agg does not draw it as opaque grey over
    grey: then it is not stamped), read from Agg: the marker drawn once over each grey."""
    from matplotlib.path import Path as MplPath
    from matplotlib.transforms import Affine2D

    matrix = np.asarray(marker_trans.get_matrix(), dtype=float)
    codes = marker_path.codes
    key = (
        dpi,
        np.asarray(marker_path.vertices, dtype=float).tobytes(),
        None if codes is None else np.asarray(codes).tobytes(),
        matrix.tobytes(),
        None if rgb_face is None else tuple(np.ravel(rgb_face)),
        gc.get_linewidth(),
        gc.get_capstyle(),
        gc.get_joinstyle(),
        gc.get_snap(),
        gc.get_antialiased(),
        gc.get_rgb(),
        gc.get_alpha(),
        gc.get_forced_alpha(),
        gc.get_hatch(),
        gc.get_sketch_params(),
    )
    if key in _stamps:
        return _stamps[key]
    extent = marker_path.transformed(Affine2D(matrix)).get_extents()
    reach = max(abs(extent.x0), abs(extent.x1), abs(extent.y0), abs(extent.y1))
    reach += gc.get_linewidth() * dpi / 72.0
    if not math.isfinite(reach) or reach > 64:
        stamp = None
    else:
        half = math.ceil(reach) + 2
        block = 2 * half + 1
        side = 16 * block  # one block per grey, 16 x 16
        renderer = RendererAgg(side, side, dpi)
        pixels = np.asarray(renderer._renderer)
        greys = np.arange(256, dtype=np.uint8).reshape(16, 16)
        pixels[..., :3] = np.repeat(np.repeat(greys, block, 0), block, 1)[..., np.newaxis]
        pixels[..., 3] = 0xFF
        unclipped = renderer.new_gc()
        unclipped.copy_properties(gc)
        unclipped.set_clip_rectangle(None)
        unclipped.set_clip_path(None)
        # A marker at the middle pixel of each block: see _marker_positions (y flips).
        middles = np.arange(16) * block + half + 0.25
        xs, rows = np.meshgrid(middles, middles)
        points = np.column_stack([xs.ravel() - 0.5, side - rows.ravel()])
        renderer._renderer.draw_markers(
            unclipped, marker_path, Affine2D(matrix), MplPath(points), Affine2D(), rgb_face
        )
        grey = pixels[..., 0]
        if not _all_opaque_grey(pixels):
            stamp = None
        else:
            made = grey.reshape(16, block, 16, block).transpose(0, 2, 1, 3).reshape(256, -1)
            changed = np.flatnonzero((made != np.arange(256)[:, np.newaxis]).any(axis=0))
            rows, cols = np.divmod(changed, block)
            stamp = _Stamp(rows - half, cols - half, np.ascontiguousarray(made[:, changed].T))
    if len(_stamps) >= MAX_STAMPS:
        _stamps.clear()
    _stamps[key] = stamp
    return stamp


#: Each grey as an opaque grey pixel read as one number (little-endian RGBA).
_OPAQUE_GREY = (np.arange(256, dtype=np.uint32) * 0x010101) | 0xFF000000


def _all_opaque_grey(rgba: np.ndarray) -> bool:
    """Whether every pixel of ``rgba`` (... x 4 uint8) is opaque grey (R = G = B, A = 255)."""
    grey = rgba[..., 0]
    return bool(
        (rgba[..., 3] == 0xFF).all()
        and (rgba[..., 1] == grey).all()
        and (rgba[..., 2] == grey).all()
    )


def _pixel_numbers(pixels: np.ndarray) -> np.ndarray | None:
    """The canvas's pixels (rows x columns x RGBA) as one number each (A B G R, rows x
    columns), or None where a number would not read them so (big-endian, not contiguous)."""
    if sys.byteorder != "little" or not pixels.flags.c_contiguous:
        return None
    return pixels.view(np.uint32)[..., 0]


def _numbers_opaque_grey(numbers: np.ndarray) -> bool:
    """Whether every pixel of ``numbers`` (:func:`_pixel_numbers`) is opaque grey."""
    return np.array_equal(_OPAQUE_GREY[numbers & 0xFF], numbers)


def _marker_positions(vertices: np.ndarray, matrix: np.ndarray, height: int):
    """Each marker's pixel (column, row from the top) as Agg's ``draw_markers`` computes it
    (for a transform without rotation or shear): the position, flipped and moved by half a
    pixel with the same floating-point steps, rounded down."""
    sx, tx, sy, ty = matrix[0, 0], matrix[0, 2], matrix[1, 1], matrix[1, 2]
    x = np.floor(vertices[:, 0] * sx + (tx + 0.5))
    y = np.floor(vertices[:, 1] * -sy + (-ty + (height + 0.5)))
    return x, y


class GlyphCachingRenderer(RendererAgg):
    """Agg renderer that renders each glyph (at each position within a pixel) once per
    process and lays out text from what it has learnt, and stamps many markers at once; the
    pixels it draws are those of :class:`RendererAgg`."""

    def _update_methods(self) -> None:
        super()._update_methods()
        self.draw_markers = self._draw_markers

    def _draw_markers(self, gc, marker_path, marker_trans, path, trans, rgbFace=None):
        if not self._stamp_markers(gc, marker_path, marker_trans, path, trans, rgbFace):
            self._renderer.draw_markers(gc, marker_path, marker_trans, path, trans, rgbFace)

    def _stamp_markers(self, gc, marker_path, marker_trans, path, trans, rgb_face) -> bool:
        """Draw the markers as Agg would, by :class:`_Stamp`, if there are many, they lie
        row after row (each row's markers left to right, each row above the one before, or
        each below) and over opaque grey; else return False (nothing drawn)."""
        vertices = path.vertices
        if not STAMP_MARKERS or path.codes is not None or len(vertices) < MIN_STAMPED:
            return False
        if gc.get_clip_path() != (None, None):
            return False
        matrix = np.asarray(trans.get_matrix(), dtype=float)
        if matrix[0, 1] != 0.0 or matrix[1, 0] != 0.0:
            return False
        stamp = _stamp(self.dpi, gc, marker_path, marker_trans, rgb_face)
        if stamp is None:
            return False
        if not stamp.rows.size:
            return True  # the marker changes no pixel
        x, y = _marker_positions(np.asarray(vertices, dtype=float), matrix, int(self.height))
        if not (np.abs(x) < 1 << 30).all() or not (np.abs(y) < 1 << 30).all():
            return False  # not finite (Agg skips those), or far off
        x, y = x.astype(np.int64), y.astype(np.int64)
        # Rows one after another, each left to right, and from row to row always up or always
        # down the canvas: then a pixel meets its markers in the order of the stamp's pixels
        # that cover it, rows of the stamp first (one way or the other), columns right to left.
        new_row = np.flatnonzero(np.diff(y)) + 1
        steps = np.diff(x)
        steps[new_row - 1] = 0
        if (steps < 0).any():
            return False
        row_steps = np.diff(y[np.r_[0, new_row]])
        upwards = not (row_steps > 0).any()
        if not (upwards or (row_steps > 0).all()):
            return False
        # Stamp rows closer than the rows of markers never meet a pixel twice: one pass each.
        gap = int(np.abs(row_steps).min()) if row_steps.size else 1 << 30
        band = (stamp.rows - stamp.rows.min()) // gap
        if not upwards:
            band = (stamp.rows.max() - stamp.rows) // gap
        # Each position once, with its number of markers.
        first = np.flatnonzero(np.r_[True, (steps != 0) | (np.diff(y) != 0)])
        counts = np.diff(np.r_[first, x.size])
        x, y = x[first], y[first]
        pixels = np.asarray(self._renderer)
        numbers = _pixel_numbers(pixels)
        if numbers is None:
            return False
        height, width = numbers.shape
        flat = numbers.reshape(-1)
        # Agg draws only inside the clip box (whole pixels, both ends included) and the canvas.
        box = self._clip_box(gc)
        inside = None
        if (
            x.min() + stamp.cols.min() >= box[0]
            and x.max() + stamp.cols.max() <= box[1]
            and y.min() + stamp.rows.min() >= box[2]
            and y.max() + stamp.rows.max() <= box[3]
        ):
            index = (y * width + x)[:, np.newaxis] + (stamp.rows * width + stamp.cols)
        else:
            rows = y[:, np.newaxis] + stamp.rows
            cols = x[:, np.newaxis] + stamp.cols
            inside = (cols >= box[0]) & (cols <= box[1]) & (rows >= box[2]) & (rows <= box[3])
            index = np.clip(rows, 0, height - 1) * width + np.clip(cols, 0, width - 1)
        under = flat[index]
        seen = under if inside is None else under[inside]
        if not _numbers_opaque_grey(seen):
            return False
        made_of = stamp.made_of(int(counts.max()))  # [(k, stamp pixel, grey)] -> pixel
        layers = (np.minimum(counts, stamp.most) - 1)[:, np.newaxis] * stamp.rows.size
        passes = [
            at
            for b in range(int(band.max()) + 1)
            for col in np.unique(stamp.cols)[::-1]
            if (at := np.flatnonzero((stamp.cols == col) & (band == b))).size
        ]
        for at in passes:
            if len(passes) == 1:  # every pixel of the stamp at once: read above
                where, before = index, under
                lut = (layers + np.arange(stamp.rows.size)) << 8
            else:
                where = index[:, at]
                before = flat[where]
                lut = (layers + at) << 8
            made = made_of[lut + (before & 0xFF)]
            if inside is not None:
                made = np.where(inside[:, at], made, before)
            flat[where] = made
        return True

    def _clip_box(self, gc) -> tuple[int, int, int, int]:
        """First and last column, first and last row (from the top) that Agg draws in with
        ``gc``: its clip rectangle rounded to whole pixels as Agg's ``set_clipbox`` does,
        within the canvas."""
        width, height = int(self.width), int(self.height)
        clip = gc.get_clip_rectangle()
        if clip is None:
            return 0, width - 1, 0, height - 1
        x0 = max(math.floor(clip.x0 + 0.5), 0)
        x1 = min(math.floor(clip.x1 + 0.5), width)
        y0 = max(math.floor(height - clip.y0 + 0.5), 0)
        y1 = min(math.floor(height - clip.y1 + 0.5), height)
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        return max(x0, 0), min(x1, width - 1), max(y0, 0), min(y1, height - 1)

    def _text_layout(self, s: str, prop: Any, mtext: Any = None):
        """``(layout, glyph positions in 1/64 px)`` of ``s`` when its layout can be learnt
        (positions None while a pair is not learnt); None when matplotlib must lay it out."""
        if not LEARN_LAYOUT or not s or not s.isascii() or not s.isprintable():
            return None
        if mtext is not None and (
            mtext.get_fontfeatures() is not None or mtext.get_language() is not None
        ):
            return None
        font = _font(prop)
        if not str(font.fname).startswith(_SHIPPED_FONTS):
            return None
        size = prop.get_size_in_points()
        flags, flags_key = _hinting_flag()
        key = (font, size, self.dpi, flags_key)
        layout = _layouts.get(key)
        if layout is None:
            if len(_layouts) >= MAX_LAYOUTS:
                _layouts.clear()
            layout = _layouts[key] = _Layout(font, size, self.dpi, flags)
        return layout, layout.positions(s)

    def _learnt_positions(self, s: str, prop: Any, mtext: Any = None):
        """``(layout, positions)`` of ``s``, laying it out with matplotlib first (and learning
        from it) when a pair is new; None when matplotlib must lay it out."""
        found = self._text_layout(s, prop, mtext)
        if found is None:
            return None
        layout, xs = found
        if xs is None:
            if layout.joins(s):
                return None
            font = self._prepare_font(prop)
            if not layout.learn(s, font._layout(s, flags=layout.flags)):
                layout.learn_pairs(s)  # which pair is joined (once per pair)
                return None
            xs = layout.positions(s)
        return layout, xs

    #: The figure whose text this renderer draws (set by :class:`GlyphCachingCanvas`): its
    #: resolution is the one matplotlib scales a font's line height by.
    figure: Any = None

    def _get_font_height_metrics(self, prop):
        # Called by matplotlib's Text._get_layout (3.11) for each text laid out: (None, None,
        # None) lets it read the font's tables itself.
        figure = self.figure
        if not KEEP_FONT_HEIGHTS or figure is None:
            return None, None, None
        return _font_height_metrics(prop, figure.dpi)

    def get_text_width_height_descent(self, s, prop, ismath):
        if ismath is False and CACHES_GLYPHS:
            found = self._learnt_positions(s, prop)
            if found is not None:
                layout, xs = found
                return layout.metrics(s, xs)
        return super().get_text_width_height_descent(s, prop, ismath)

    def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if not ismath and CACHES_GLYPHS:
            found = self._learnt_positions(s, prop, mtext)
            if found is not None:
                layout, xs = found
                font, size = layout.font, layout.size
                glyphs = layout.glyphs(s)
                self._draw_text_glyphs_and_boxes(
                    gc,
                    x,
                    y,
                    angle,
                    (
                        (font, size, g, 0, 1, px / 64.0, 0.0)
                        for g, px in zip(glyphs, xs, strict=True)
                    ),
                    [],
                )
                return
        super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)

    def _draw_text_glyphs_and_boxes(self, gc, x, y, angle, glyphs, boxes):
        # The same steps as RendererAgg's (matplotlib 3.11), with FreeType's bitmap kept.
        cos = math.cos(math.radians(angle))
        sin = math.sin(math.radians(angle))
        load_flags, flags_key = _hinting_flag()
        antialiased = gc.get_antialiased()
        mode = RenderMode.NORMAL if antialiased else RenderMode.MONO
        height = self.height
        placed = []  # (bitmap, column, row of its top) of each glyph
        for font, size, glyph_index, slant, extend, dx, dy in glyphs:  # dy is upwards
            found = _matrices.get((angle, slant, extend))
            if found is None:
                rotate = 0x10000 * np.array([[cos, -sin], [sin, cos]])
                matrix = (rotate @ [[extend, extend * slant], [0, 1]]).round().astype(int)
                matrix.flags.writeable = False
                if len(_matrices) >= 256:
                    _matrices.clear()
                found = _matrices[angle, slant, extend] = matrix, matrix.tobytes()
            matrix, matrix_key = found
            # FreeType's position (1/64 px; its y is upwards): whole pixels and the rest.
            px = round(0x40 * (x + dx * cos - dy * sin))
            py = round(0x40 * (height - y + dx * sin + dy * cos))
            key = (font, size, self.dpi, glyph_index, flags_key, antialiased)
            key += (matrix_key, px & 0x3F, py & 0x3F)
            cached = _glyphs.get(key)
            if cached is None:
                font.set_size(size, self.dpi)
                font._set_transform(matrix, [px & 0x3F, py & 0x3F])
                bitmap = font._render_glyph(glyph_index, load_flags, mode)
                buffer = bitmap.buffer
                if not antialiased:
                    buffer *= 0xFF
                if len(_glyphs) >= MAX_GLYPHS:
                    _glyphs.clear()
                cached = _glyphs[key] = (buffer, bitmap.left, bitmap.top)
            buffer, left, top = cached
            # draw_text_image's y is downwards & the bitmap bottom side.
            placed.append((buffer, left + (px >> 6), int(height) - top - (py >> 6)))
        if not (angle == 0 and placed and self._blend_black_text(gc, placed)):
            for buffer, x0, y0 in placed:
                self._renderer.draw_text_image(buffer, x0, y0 + buffer.shape[0], 0, gc)
        if boxes:
            super()._draw_text_glyphs_and_boxes(gc, x, y, angle, (), boxes)

    def _blend_black_text(self, gc, placed: list) -> bool:
        """Blend the glyph bitmaps ``placed`` (upright) into the canvas as Agg's
        ``draw_text_image`` would, one after another, if the text is opaque black, unclipped,
        inside the canvas and over opaque grey pixels (the figure's white, a glyph drawn
        before); return False (nothing drawn) otherwise.

        Agg blends an opaque colour into an opaque pixel with each glyph pixel's coverage; for
        black into grey the result is grey and depends on the grey and the coverage alone:
        :func:`_black_text_blend` reads that table from Agg itself. One table look-up per
        glyph on the line's grey values replaces a ``draw_text_image`` call (~10 us each).
        """
        if not BLEND_TEXT or gc.get_rgb() != (0.0, 0.0, 0.0, 1.0) or gc.get_forced_alpha():
            return False
        if gc.get_clip_rectangle() is not None or gc.get_clip_path() != (None, None):
            return False
        table = _black_text_blend()
        if table is None:
            return False
        x0 = min(x for _, x, _ in placed)
        y0 = min(y for _, _, y in placed)
        x1 = max(x + b.shape[1] for b, x, _ in placed)
        y1 = max(y + b.shape[0] for b, _, y in placed)
        if x0 < 0 or y0 < 0 or x1 > self.width or y1 > self.height:
            return False
        pixels = np.asarray(self._renderer)
        numbers = _pixel_numbers(pixels)
        if numbers is not None:
            region = numbers[y0:y1, x0:x1]
            if not _numbers_opaque_grey(region):
                return False
            grey = (region & 0xFF).astype(np.uint8)
        else:  # pragma: no cover - Agg's buffer is C-contiguous; big-endian machines
            region = pixels[y0:y1, x0:x1]
            grey = region[..., 0]
            if not _all_opaque_grey(region):
                return False
            grey = grey.copy()
        for bitmap, x, y in placed:
            h, w = bitmap.shape
            under = grey[y - y0 : y - y0 + h, x - x0 : x - x0 + w]
            under[...] = table[under, bitmap]
        if region.ndim == 2:
            region[...] = _OPAQUE_GREY[grey]
        else:  # pragma: no cover - as above
            region[..., :3] = grey[..., np.newaxis]
        return True


#: FreeType's transform (16.16 fixed point) and its bytes per angle, slant and extension.
_matrices: dict[tuple[float, float, float], tuple[np.ndarray, bytes]] = {}

_blend_table: list[np.ndarray | None] = []


def _black_text_blend() -> np.ndarray | None:
    """``table[grey, coverage]``: the grey that Agg's ``draw_text_image`` makes of an opaque
    grey pixel under an opaque black glyph pixel of that coverage, read from Agg itself (None,
    and no quick blending, if the results are not all opaque grey)."""
    if not _blend_table:
        renderer = RendererAgg(256, 256, 72)
        pixels = np.asarray(renderer._renderer)
        pixels[..., :3] = np.arange(256, dtype=np.uint8)[:, np.newaxis, np.newaxis]
        pixels[..., 3] = 0xFF
        coverage = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
        gc = renderer.new_gc()
        gc.set_foreground((0.0, 0.0, 0.0, 1.0))
        renderer._renderer.draw_text_image(coverage, 0, 256, 0, gc)
        grey = pixels[..., 0]
        _blend_table.append(grey.copy() if _all_opaque_grey(pixels) else None)
    return _blend_table[0]


class GlyphCachingCanvas(FigureCanvasAgg):
    """Agg canvas drawing with a :class:`GlyphCachingRenderer` (the stock renderer where
    matplotlib does not draw text glyph by glyph)."""

    def get_renderer(self) -> Any:
        if not CACHES_GLYPHS:
            return super().get_renderer()
        w, h = self.get_width_height(physical=True)
        renderer = getattr(self, "_glyph_renderer", None)
        if renderer is None or (renderer.width, renderer.height, renderer.dpi) != (
            w,
            h,
            self.figure.dpi,
        ):
            renderer = self._glyph_renderer = GlyphCachingRenderer(w, h, self.figure.dpi)
            renderer.figure = self.figure
        self.renderer = renderer
        return renderer


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(rgba: np.ndarray) -> bytes:
    """``rgba`` (rows from the top x columns x 4, uint8) as a PNG file's bytes.

    Every row has the "up" filter (each byte minus the one above it) and the stream is
    deflated at level 1 (ISA-L's, else zlib's): for figures, which are mostly flat areas,
    10-20 times faster than PIL's encoder (which tries five filters on every row, then zlib
    level 6) for a file about 1.4 times the size of its smallest. No text chunks.
    """
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"expected rows x columns x 4 uint8 pixels, got {rgba.shape} {rgba.dtype}")
    height, width, _ = rgba.shape
    flat = rgba.reshape(height, width * 4)
    rows = np.empty((height, 1 + width * 4), dtype=np.uint8)
    rows[:, 0] = 2  # filter type "up"
    rows[:1, 1:] = flat[:1]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", _deflate(rows, 1)),
            _chunk(b"IEND", b""),
        )
    )
