"""Every example workflow has its thumbnail, workflows/<name>.jpg: the template browser asks for it and
shows a grey placeholder without one, and the Registry expects one picture per example workflow. Drawn by
`make thumbnails` (scripts/make_thumbnails.py); checked here without a server."""

from __future__ import annotations

import pytest
from e2e.runner import WORKFLOW_FILES, WORKFLOWS_DIR
from PIL import Image, ImageStat

MAX_BYTES = 100_000  # small enough for a browser to fetch seven at once, and for the repository
SIDES = (256, 1024)  # the cards are square and about 250 px wide; 1024 is plenty for a sharp zoom


def test_no_thumbnail_without_its_workflow():
    """A renamed or removed workflow leaves no stale picture behind."""
    pictures = {path.stem for path in WORKFLOWS_DIR.glob("*.jpg")}
    assert pictures <= {name.removesuffix(".json") for name in WORKFLOW_FILES}, pictures
    assert not [p.name for p in WORKFLOWS_DIR.iterdir() if p.suffix.lower() in (".jpeg", ".png", ".webp")]


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_workflow_has_a_small_square_jpeg_thumbnail(name):
    path = WORKFLOWS_DIR / name.replace(".json", ".jpg")
    assert path.is_file(), f"no {path.name}: run `make thumbnails`"
    assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size} bytes"
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.mode == "RGB", (image.format, image.mode)
        width, height = image.size
        assert width == height and SIDES[0] <= width <= SIDES[1], image.size
        image.load()  # decodes the whole file: a truncated one raises here
        # a drawn graph, not a blank or single-colour picture: its pixels vary
        assert max(ImageStat.Stat(image.convert("L")).stddev) > 10
