"""Drawing many figures quickly with matplotlib's Agg renderer: a canvas whose renderer keeps
the glyph bitmaps it has rendered, and a quick PNG writer (ISA-L's deflate where installed).

matplotlib 3.11 renders every glyph of every text with FreeType each time the text is drawn
(about 50 us a glyph, most of a small figure's drawing time). :class:`GlyphCachingCanvas`
gives figures a renderer that keeps each bitmap, keyed by everything FreeType's result depends
on: font, size, resolution, glyph, hinting, antialiasing, rotation and the glyph's position
within its pixel (1/64 px). A glyph moved by whole pixels is the same bitmap moved, so the
figure's pixels are exactly those of the stock renderer. Where matplotlib draws text another
way (before 3.11), the renderer is the stock one.

Importing this module imports matplotlib: import it inside the functions that draw.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg, get_hinting_flag
from matplotlib.ft2font import FT2Font

try:  # ISA-L's deflate: zlib's format, ~10x faster than zlib at the same size for figures
    from isal.isal_zlib import compress as _deflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib where it has no wheel
    from zlib import compress as _deflate

__all__ = ["GlyphCachingCanvas", "GlyphCachingRenderer", "png_bytes"]

#: Glyph bitmaps kept per process (each some 100 bytes to a few kB); the cache is emptied
#: when full.
MAX_GLYPHS = 20_000

_glyphs: dict[tuple, tuple[np.ndarray, int, int]] = {}

#: Whether this matplotlib draws text glyph by glyph through the method overridden below.
CACHES_GLYPHS = all(
    (
        hasattr(RendererAgg, "_draw_text_glyphs_and_boxes"),
        hasattr(FT2Font, "_set_transform"),
        hasattr(FT2Font, "_render_glyph"),
    )
)


class GlyphCachingRenderer(RendererAgg):
    """Agg renderer that renders each glyph (at each position within a pixel) once per
    process; the pixels it draws are those of :class:`RendererAgg`."""

    def _draw_text_glyphs_and_boxes(self, gc, x, y, angle, glyphs, boxes):
        # The same steps as RendererAgg's (matplotlib 3.11), with FreeType's bitmap kept.
        from matplotlib.ft2font import RenderMode

        cos = math.cos(math.radians(angle))
        sin = math.sin(math.radians(angle))
        load_flags = get_hinting_flag()
        antialiased = gc.get_antialiased()
        mode = RenderMode.NORMAL if antialiased else RenderMode.MONO
        height = self.height
        matrices: dict[tuple[float, float], tuple[np.ndarray, bytes]] = {}
        for font, size, glyph_index, slant, extend, dx, dy in glyphs:  # dy is upwards
            if (slant, extend) not in matrices:
                rotate = 0x10000 * np.array([[cos, -sin], [sin, cos]])
                matrix = (rotate @ [[extend, extend * slant], [0, 1]]).round().astype(int)
                matrices[slant, extend] = matrix, matrix.tobytes()
            matrix, matrix_key = matrices[slant, extend]
            # FreeType's position (1/64 px; its y is upwards): whole pixels and the rest.
            px = round(0x40 * (x + dx * cos - dy * sin))
            py = round(0x40 * (height - y + dx * sin + dy * cos))
            key = (font, size, self.dpi, glyph_index, load_flags, antialiased)
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
            self._renderer.draw_text_image(
                buffer,
                left + (px >> 6),
                int(height) - top - (py >> 6) + buffer.shape[0],
                0,
                gc,
            )
        if boxes:
            super()._draw_text_glyphs_and_boxes(gc, x, y, angle, (), boxes)


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
