"""Draws a MaskChart with Pillow (a ComfyUI dependency, not one of the engine's own).

Horizontal bars, one row per layer: labels stay horizontal and readable for SD1.5's 16 layers
as for SDXL's 70; the image grows taller up to inspection.MAX_ROWS rows, so its size is bounded.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..fia_engine.core.inspection import KEPT, PRUNED, MaskChart

WIDTH = 1000
MARGIN = 18
ROW = 24
BAR = 16
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
FAINT = (150, 150, 150)
GRID = (228, 228, 228)
SEPARATOR = (190, 190, 200)
# Colour-blind-friendly (Okabe-Ito) order, then a few more; concepts beyond that reuse them.
PALETTE = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0),
           (240, 228, 66), (120, 94, 240), (100, 100, 100), (160, 40, 40), (40, 120, 40), (30, 30, 120)]
SERIES_COLOURS = {PRUNED: (213, 60, 40), KEPT: (170, 170, 170)}


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at a readable size; the tiny bitmap font only where FreeType is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _colour(chart: MaskChart, index: int) -> tuple[int, int, int]:
    name = chart.series[index]
    return SERIES_COLOURS.get(name) or PALETTE[index % len(PALETTE)]


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    return int(math.ceil(draw.textlength(text, font=font)))


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split(" "):
        trial = f"{current} {word}" if current else word
        if current and _text_width(draw, trial, font) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    return [*lines, current] if current else lines


def nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """Round axis ticks (1, 2, 2.5, 5 x 10^k) from 0 to at least `maximum`."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw = maximum / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(math.ceil(maximum / step - 1e-9)) + 1)]


def render_chart(chart: MaskChart, width: int = WIDTH) -> Image.Image:
    """The chart as an RGB image: title, legend, one stacked bar per layer, x axis with its label."""
    title_font, font, small = _font(22), _font(15), _font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    inner = width - 2 * MARGIN
    subtitle = _wrap(probe, chart.subtitle, small, inner)
    legend_rows = _legend_rows(probe, chart, font, inner)

    y_axis_band = 22
    label_width = max(_text_width(probe, layer.label, font) for layer in chart.layers) + 12
    notes = [layer.note(chart.noted) for layer in chart.layers]
    note_width = max(_text_width(probe, t, small) for t in [*notes, chart.note_header]) + 16
    plot_left = MARGIN + y_axis_band + label_width
    plot_right = width - MARGIN - note_width
    top = MARGIN + 30 + 18 * len(subtitle) + 10 + 24 * len(legend_rows) + 22
    plot_bottom = top + ROW * len(chart.layers)
    height = plot_bottom + 62

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, MARGIN), chart.title, fill=INK, font=title_font)
    y = MARGIN + 30
    for line in subtitle:
        draw.text((MARGIN, y), line, fill=INK, font=small)
        y += 18
    y += 10
    for row in legend_rows:
        x = MARGIN
        for index, name in row:
            draw.rectangle((x, y + 3, x + 14, y + 17), fill=_colour(chart, index))
            draw.text((x + 20, y + 1), name, fill=INK, font=font)
            x += 20 + _text_width(draw, name, font) + 24
        y += 24

    shares = [sum(layer.share(n) for n in layer.counts) for layer in chart.layers]
    ticks = nice_ticks(max(shares))
    scale = (plot_right - plot_left) / ticks[-1]
    for tick in ticks:
        x = plot_left + tick * scale
        draw.line((x, top - 4, x, plot_bottom), fill=GRID)
        text = f"{tick:.4g}"
        draw.text((x - _text_width(draw, text, small) / 2, plot_bottom + 6), text, fill=INK, font=small)
    note_right = width - MARGIN
    draw.text((note_right - _text_width(draw, chart.note_header, small), top - 20), chart.note_header, fill=FAINT,
              font=small)

    previous_group = None
    for row, (layer, note) in enumerate(zip(chart.layers, notes)):
        row_top = top + row * ROW
        if previous_group is not None and layer.group != previous_group:
            draw.line((MARGIN + y_axis_band, row_top, plot_right, row_top), fill=SEPARATOR)
        previous_group = layer.group
        draw.text((plot_left - 8 - _text_width(draw, layer.label, font), row_top + 3), layer.label, fill=INK,
                  font=font)
        x = float(plot_left)
        bar_top = row_top + (ROW - BAR) / 2
        for index, count in enumerate(layer.counts):
            length = layer.share(count) * scale
            if count:
                draw.rectangle((x, bar_top, x + max(length, 1.0), bar_top + BAR), fill=_colour(chart, index))
            x += length
        draw.text((note_right - _text_width(draw, note, small), row_top + 5), note, fill=INK, font=small)

    draw.line((plot_left, top - 4, plot_left, plot_bottom), fill=INK)
    draw.line((plot_left, plot_bottom, plot_right, plot_bottom), fill=INK)
    x_title = "share of the layer's weights (%)"
    draw.text(((plot_left + plot_right - _text_width(draw, x_title, font)) / 2, plot_bottom + 28), x_title,
              fill=INK, font=font)
    axis_title = "layer (block, transformer depth), input to output"
    if _text_width(draw, axis_title, font) > plot_bottom - top:
        axis_title = "layer"
    _vertical_text(image, axis_title, font, MARGIN, (top + plot_bottom) // 2)
    return image


def _legend_rows(draw: ImageDraw.ImageDraw, chart: MaskChart, font, width: int) -> list[list[tuple[int, str]]]:
    rows: list[list[tuple[int, str]]] = [[]]
    used = 0
    for index, name in enumerate(chart.series):
        item = 20 + _text_width(draw, name, font) + 24
        if rows[-1] and used + item > width:
            rows.append([])
            used = 0
        rows[-1].append((index, name))
        used += item
    return rows


def _vertical_text(image: Image.Image, text: str, font, left: int, centre_y: int) -> None:
    """Axis title rotated to read bottom-up, centred on `centre_y`."""
    probe = ImageDraw.Draw(image)
    label = Image.new("RGB", (_text_width(probe, text, font) + 4, 20), BACKGROUND)
    ImageDraw.Draw(label).text((2, 1), text, fill=INK, font=font)
    rotated = label.rotate(90, expand=True)
    top = max(0, min(centre_y - rotated.height // 2, image.height - rotated.height))
    image.paste(rotated, (left, top))


def stack_images(images: list[Image.Image]) -> Image.Image:
    """Several charts one below the other, in one image (a ComfyUI IMAGE batch needs equal sizes)."""
    width = max(image.width for image in images)
    result = Image.new("RGB", (width, sum(image.height for image in images)), BACKGROUND)
    y = 0
    for image in images:
        result.paste(image, (0, y))
        y += image.height
    return result


def to_comfy_image(image: Image.Image) -> torch.Tensor:
    """A ComfyUI IMAGE: float32 [1, H, W, 3] in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).unsqueeze(0)
