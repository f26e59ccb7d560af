"""EmojiWorld's data: open emoji sets fetched by package name, checked, rendered once to a cache.

No emoji image is in git. `python -m toyworld.emoji.data` (or `make emoji-data`) fetches the
pinned npm tarballs with `npm pack`, checks each SHA-256, unpacks them under `.cache/emojiworld/`
and renders every base emoji in every style (drawn at 64 px, stored at the 32 and 16 px the world
uses) to one uint8 safetensors file (`renders.safetensors`, 35 MB). Everything that needs the images calls `load_renders()`, which names the missing
package and the command when the cache is not there.

Styles (`STYLES`): Twemoji (the world's default look, never named in a prompt), Noto, OpenMoji
colour, OpenMoji line art and Fluent flat. Apple's and Facebook's sets are not used (not openly
licensed). Attribution: NOTICE and the README.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EMOJIWORLD_CACHE", REPO / ".cache" / "emojiworld"))
RENDERS = "renders.safetensors"
FORMAT = "emojiworld-renders-v2"  # v2: stored at the sizes the world draws (32 and 16 px)
RENDER_SIZE = 64  # drawn at this size, then area-averaged down to what the world uses:
SIZE = 32  # the world's image size
PLACED = 16  # an object on a scene is drawn this many pixels wide
FIT = 0.875  # an object's visible box fills this share of the tile (OpenMoji draws with a wide margin)


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str
    licence: str
    credit: str

    @property
    def tarball(self) -> str:
        return f"{self.name}-{self.version}.tgz"


PACKAGES: dict[str, Package] = {p.name: p for p in (
    Package("emoji-datasource-twitter", "16.0.0",
            "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
            "CC-BY 4.0", "Twemoji, Twitter/X and contributors"),
    Package("emoji-datasource-google", "16.0.0",
            "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
            "Apache-2.0", "Noto Emoji, Google"),
    Package("openmoji", "17.0.0",
            "55ee7d13485dec86e9f38c1f3a645a13382d33ff97c0cd845ee824b0aef45e68",
            "CC BY-SA 4.0", "OpenMoji, HfG Schwäbisch Gmünd and contributors"),
    Package("fluentui-emoji", "1.3.0",
            "ec892e607e854859b812c7d827801756adc19955b0ef56d4ae8afcddd19492c5",
            "MIT", "Fluent Emoji, Microsoft"),
    Package("emojibase-data", "17.0.0",
            "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a",
            "MIT", "Emojibase (CLDR names and tags)"),
)}

# style name (as a prompt word) -> package it comes from; the first is the unnamed default look
STYLES: tuple[str, ...] = ("twemoji", "noto", "openmoji", "lineart", "fluent")
DEFAULT_STYLE = STYLES[0]
STYLE_PACKAGE = {"twemoji": "emoji-datasource-twitter", "noto": "emoji-datasource-google",
                 "openmoji": "openmoji", "lineart": "openmoji", "fluent": "fluentui-emoji"}

# Full-tile scenes of emoji-data.md, drawn in the default look: the world's places.
SCENE_CODES: tuple[str, ...] = ("1F3DE", "1F3D9", "1F306", "1F307", "1F303", "1F304", "1F305",
                                "1F309", "1F301", "1F30C", "1F386", "1F391")
SKIPPED_CATEGORIES = ("Flags", "Component")


class EmojiDataMissing(RuntimeError):
    """The emoji image cache (or a package it is built from) is not on this machine."""


@dataclass(frozen=True)
class Concept:
    code: str  # codepoints, uppercase, '-' joined, without FE0F
    name: str  # CLDR English name (emojibase label), lowercase
    category: str
    subcategory: str
    tags: tuple[str, ...]


def _norm(code: str) -> str:
    return code.upper().replace("-FE0F", "")


def _slug(text: str) -> str:
    text = text.lower().replace("\u2019", "").replace("'", "")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def fetch_command() -> str:
    return "make emoji-data   (or: .venv/bin/python -m toyworld.emoji.data)"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(cache: Path = CACHE) -> dict[str, Path]:
    """Each package's tarball, fetched with `npm pack` when absent and checked against its SHA-256."""
    pkgs = cache / "packages"
    pkgs.mkdir(parents=True, exist_ok=True)
    out = {}
    for pkg in PACKAGES.values():
        path = pkgs / pkg.tarball
        if not path.exists():
            if shutil.which("npm") is None:
                raise EmojiDataMissing(f"npm is needed to fetch {pkg.name}@{pkg.version}: apt-get install npm")
            subprocess.run(["npm", "pack", "-q", f"{pkg.name}@{pkg.version}", "--pack-destination", str(pkgs)],
                           check=True, stdout=subprocess.DEVNULL)
        got = _sha256(path)
        if got != pkg.sha256:
            path.rename(path.with_suffix(".tgz.bad"))
            raise EmojiDataMissing(f"{pkg.tarball}: SHA-256 {got} is not the pinned {pkg.sha256}; "
                                   f"the file was set aside as .tgz.bad, run {fetch_command()} again")
        out[pkg.name] = path
    return out


class _Tarball:
    """Members of one package tarball by path below `package/` (read once, kept in memory)."""

    def __init__(self, path: Path, wanted: re.Pattern[str]) -> None:
        self.files: dict[str, bytes] = {}
        with tarfile.open(path) as tar:
            for member in tar:
                name = member.name.removeprefix("package/")
                if member.isfile() and wanted.fullmatch(name):
                    self.files[name] = tar.extractfile(member).read()  # type: ignore[union-attr]


def catalogue(tarballs: dict[str, Path]) -> list[Concept]:
    """The 1,623 base emoji (no flags, components or keycaps), with CLDR names and tags."""
    datasource = _Tarball(tarballs["emoji-datasource-twitter"], re.compile(r"emoji\.json"))
    emojibase = _Tarball(tarballs["emojibase-data"], re.compile(r"en/data\.json"))
    entries = json.loads(datasource.files["emoji.json"])
    cldr = {_norm(e["hexcode"]): e for e in json.loads(emojibase.files["en/data.json"])}
    concepts = []
    for e in sorted(entries, key=lambda e: e["sort_order"]):
        if e["category"] in SKIPPED_CATEGORIES or e["subcategory"] == "keycap":
            continue
        code = _norm(e["unified"])
        info = cldr[code]
        concepts.append(Concept(code, info["label"].lower(), e["category"], e["subcategory"],
                                tuple(t.lower() for t in info.get("tags", ()))))
    return concepts


def _fit(img, size: int, fit: float):
    """Crop to the visible (alpha) box and centre it, aspect kept, in `fit` of a transparent tile."""
    from PIL import Image

    img = img.convert("RGBA")
    box = img.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        return Image.new("RGBA", (size, size))
    img = img.crop(box)
    scale = fit * size / max(img.size)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    tile = Image.new("RGBA", (size, size))
    tile.alpha_composite(img.resize((w, h), Image.LANCZOS), ((size - w) // 2, (size - h) // 2))
    return tile


def _svg(data: bytes, size: int):
    from PIL import Image

    try:
        import cairosvg
    except OSError as err:  # the Python package is there, Debian's cairo library is not
        raise EmojiDataMissing(f"rasterising SVG needs libcairo2 ({err}): apt-get install libcairo2") from err

    png = cairosvg.svg2png(bytestring=data, output_width=2 * size, output_height=2 * size)
    return Image.open(io.BytesIO(png))


def render(tarballs: dict[str, Path], size: int = RENDER_SIZE) -> tuple[list[Concept], dict[str, torch.Tensor]]:
    """Every concept in every style at SIZE ([N, S, SIZE, SIZE, 4] uint8 RGBA), in the default look
    at PLACED for scenes ([N, PLACED, PLACED, 4]), and which drawings exist ([N, S])."""
    from PIL import Image

    concepts = catalogue(tarballs)
    sources = {
        "twemoji": _Tarball(tarballs["emoji-datasource-twitter"], re.compile(r"img/twitter/64/.*\.png")),
        "noto": _Tarball(tarballs["emoji-datasource-google"], re.compile(r"img/google/64/.*\.png")),
        "openmoji": _Tarball(tarballs["openmoji"], re.compile(r"(color|black)/svg/.*\.svg")),
        "fluent": _Tarball(tarballs["fluentui-emoji"], re.compile(r"icons/flat/.*\.svg")),
    }
    openmoji = {_norm(Path(n).stem): Path(n).stem for n in sources["openmoji"].files if n.startswith("color/")}

    def image_of(style: str, c: Concept):
        if style in ("twemoji", "noto"):
            folder = "img/twitter/64" if style == "twemoji" else "img/google/64"
            raw = sources[style].files.get(f"{folder}/{c.code.lower()}.png")
            if raw is None:  # datasource file names keep FE0F where the sequence has one
                match = [v for k, v in sources[style].files.items()
                         if k.startswith(folder) and _norm(Path(k).stem) == c.code]
                raw = match[0] if match else None
            return None if raw is None else Image.open(io.BytesIO(raw))
        if style in ("openmoji", "lineart"):
            stem = openmoji.get(c.code)
            folder = "color" if style == "openmoji" else "black"
            return None if stem is None else _svg(sources["openmoji"].files[f"{folder}/svg/{stem}.svg"], size)
        for slug in (_slug(c.name), _slug(c.name) + "-default"):
            raw = sources["fluent"].files.get(f"icons/flat/{slug}.svg")
            if raw is not None:
                return _svg(raw, size)
        return None

    drawn = np.zeros((len(concepts), len(STYLES), size, size, 4), np.uint8)
    for i, c in enumerate(concepts):
        for s, style in enumerate(STYLES):
            img = image_of(style, c)
            if img is not None:
                # a scene fills the tile as drawn; an object is cropped and centred
                scene = c.code in SCENE_CODES
                drawn[i, s] = np.asarray(img.convert("RGBA").resize((size, size), Image.LANCZOS) if scene
                                         else _fit(img, size, FIT))
    drawn_t = torch.from_numpy(drawn)
    return concepts, {
        "objects": _to_uint8(area_resize(drawn_t, SIZE)),
        "placed": _to_uint8(area_resize(drawn_t[:, STYLES.index(DEFAULT_STYLE)], PLACED)),
        # a drawing that shows nothing (OpenMoji's line-art "new button" is white on nothing) is absent
        "present": drawn_t[..., 3].flatten(2).amax(-1) > 0,
    }


def area_resize(rgba: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 RGBA [..., H, W, 4] -> float RGBA [..., size, size, 4] in [0, 1], averaged with
    premultiplied alpha (colours of transparent pixels do not bleed into edges)."""
    shape = rgba.shape[:-3]
    x = rgba.reshape(-1, *rgba.shape[-3:]).float().div(255).movedim(-1, 1)
    premult = torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], 1)
    small = torch.nn.functional.interpolate(premult, size=(size, size), mode="area")
    alpha = small[:, 3:]
    rgb = torch.where(alpha > 1e-6, small[:, :3] / alpha.clamp_min(1e-6), torch.zeros_like(small[:, :3]))
    return torch.cat([rgb, alpha], 1).movedim(1, -1).reshape(*shape, size, size, 4)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def _pins() -> str:
    return json.dumps({p.name: {"version": p.version, "sha256": p.sha256} for p in PACKAGES.values()})


def is_current(cache: Path = CACHE) -> bool:
    """Whether the cached renders were made from the pinned packages by this renderer."""
    from safetensors import safe_open

    path = cache / RENDERS
    if not path.exists():
        return False
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return meta.get("format") == FORMAT and meta.get("packages") == _pins()


def build(cache: Path = CACHE) -> Path:
    """Fetch, check and render: the one provisioning step."""
    from safetensors.torch import save_file

    out = cache / RENDERS
    tarballs = fetch(cache)
    concepts, tensors = render(tarballs)
    meta = {
        "format": FORMAT,
        "concepts": json.dumps([asdict(c) for c in concepts]),
        "styles": json.dumps(STYLES),
        "scenes": json.dumps(SCENE_CODES),
        "packages": _pins(),
    }
    tmp = out.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), meta)
    tmp.replace(out)
    return out


@dataclass(frozen=True)
class Renders:
    concepts: tuple[Concept, ...]
    objects: torch.Tensor  # [N, S, SIZE, SIZE, 4] uint8 RGBA
    placed: torch.Tensor  # [N, PLACED, PLACED, 4] uint8 RGBA, the default look
    present: torch.Tensor  # [N, S] bool


def load_renders(cache: Path = CACHE) -> Renders:
    """The rendered image set; a clear message naming what is missing and the command otherwise."""
    from safetensors import safe_open

    path = cache / RENDERS
    if not path.exists():
        missing = [p.tarball for p in PACKAGES.values() if not (cache / "packages" / p.tarball).exists()]
        what = (f"the packages {', '.join(missing)} are not fetched" if missing
                else "the images are not rendered yet")
        raise EmojiDataMissing(f"EmojiWorld needs its emoji images ({path}): {what}. Run {fetch_command()}")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        concepts = tuple(Concept(**{**c, "tags": tuple(c["tags"])}) for c in json.loads(meta["concepts"]))
        return Renders(concepts, f.get_tensor("objects"), f.get_tensor("placed"), f.get_tensor("present"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--force", action="store_true", help="render again even when the cache is current")
    a = ap.parse_args(argv)
    path = a.cache / RENDERS if is_current(a.cache) and not a.force else build(a.cache)
    r = load_renders(a.cache)
    print(f"{path}: {len(r.concepts)} concepts x {len(STYLES)} styles, "
          f"{int(r.present.sum())} images ({', '.join(f'{s} {int(n)}' for s, n in zip(STYLES, r.present.sum(0)))})")


if __name__ == "__main__":
    main()
