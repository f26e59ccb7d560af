"""Draws the Registry icon (docs/icon.png): a feed-forward weight matrix in which a few neurons'
weights are pruned, the thing the pack does. Deterministic, so re-running it gives the same file."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 256
CELLS = 8
PRUNED_COLUMNS = {2, 5}  # concept-sensitive neurons: their weights are pruned
KEPT_IN_PRUNED = {(2, 1), (5, 6)}  # weights shared by many concepts stay


def draw(path: Path) -> None:
    rng = random.Random(1244)
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    canvas = ImageDraw.Draw(image)
    canvas.rounded_rectangle((0, 0, SIZE - 1, SIZE - 1), radius=44, fill=(28, 32, 48, 255))
    margin, gap = 28, 6
    cell = (SIZE - 2 * margin - (CELLS - 1) * gap) / CELLS
    for row in range(CELLS):
        for col in range(CELLS):
            x, y = margin + col * (cell + gap), margin + row * (cell + gap)
            box = (round(x), round(y), round(x + cell), round(y + cell))
            if col in PRUNED_COLUMNS and (col, row) not in KEPT_IN_PRUNED:
                canvas.rounded_rectangle(box, radius=5, outline=(235, 90, 90, 255), width=3)
            else:
                shade = rng.randint(150, 235)
                canvas.rounded_rectangle(box, radius=5, fill=(90, shade, 245, 255))
    image.save(path, optimize=True)


if __name__ == "__main__":
    draw(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "icon.png")
