"""Every email template rendered in headless Chromium, as a mail client would show the HTML part.

The sample messages of `ppo_alerts.render_examples` are written to test-artifacts/emails/ with a 900x1200
screenshot each (kept for a person to look at: test-artifacts/ is gitignored, CI keeps it as an artefact).
Chromium takes about 2 s a page, so the default run takes one message of each layout (a notice about a person, a
Category A warrant, a court recipient, a list, an escalation, the custody digest); PPO_EMAIL_SCREENSHOTS=all
takes every rule's message (the rules differ only in their sentences, not in layout). Each PNG is decoded here
(a minimal decoder over zlib, no new dependency) and checked: not blank, nothing wider than the window, and the
colours that carry meaning are there (the red Category A banner, the green acknowledgement button, the digest's
shading).

Needs the Debian package `chromium` (/usr/bin/chromium); skipped with that reason when it is missing.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ppo_alerts.render_examples import CHROMIUM, chromium_screenshot, write_examples
from services.notifier.render import RULES
from shared.custody import DIGEST

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install the Debian package `chromium` (apt-get install -y "
                                  "chromium) to render the email templates in a browser"
)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "emails"
LAYOUTS = ("A4", "A2", "B1-court", "C6", "escalation", DIGEST)
NAMES = (*RULES, "B1-court", "escalation", DIGEST) if os.environ.get("PPO_EMAIL_SCREENSHOTS") == "all" else LAYOUTS
WIDTH, HEIGHT = 900, 1200
BACKGROUND = (243, 242, 241)  # the page around the message card (#f3f2f1)
RED, GREEN, BLUE = (212, 53, 28), (0, 112, 60), (29, 112, 184)
PINK, YELLOW = (246, 215, 210), (255, 247, 191)  # digest rows: 7 days or fewer, 28 days or fewer


# --- a minimal PNG decoder (8-bit RGB / RGBA, not interlaced: what Chromium writes) -------------------------


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    rows: list[bytes]  # RGB, 3 bytes a pixel
    _histograms: dict[tuple[int, int | None], Counter[bytes]] = field(default_factory=dict, repr=False)

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        r = self.rows[y]
        return r[3 * x], r[3 * x + 1], r[3 * x + 2]

    def histogram(self, y0: int = 0, y1: int | None = None) -> Counter[bytes]:
        """Pixels per colour (3-byte RGB) in rows y0..y1."""
        if (y0, y1) not in self._histograms:
            found: Counter[bytes] = Counter()
            for r in self.rows[y0:y1]:
                found.update([r[i:i + 3] for i in range(0, len(r), 3)])
            self._histograms[(y0, y1)] = found
        return self._histograms[(y0, y1)]

    def count(self, colour: tuple[int, int, int], y0: int = 0, y1: int | None = None) -> int:
        return self.histogram(y0, y1)[bytes(colour)]


def decode_png(data: bytes) -> Image:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    assert header is not None, "no IHDR"
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or colour_type not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour_type}, interlace {interlace}")
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:  # Up
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
        elif kind == 4:  # Paeth
            for i in range(stride):
                a, b, c = (line[i - bpp] if i >= bpp else 0), prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        elif kind != 0:
            raise ValueError(f"unknown PNG filter {kind}")
        rows.append(bytes(line) if bpp == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3))
        prev = line
    return Image(width, height, rows)


# --- the screenshots -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def screenshots() -> dict[str, Path]:
    write_examples(ARTIFACTS)
    jobs = {name: (ARTIFACTS / f"{name}.html", ARTIFACTS / f"{name}.png") for name in NAMES}
    for _, png in jobs.values():
        png.unlink(missing_ok=True)
    for html, png in jobs.values():  # one at a time: Chromium is CPU-bound, parallel runs are no faster
        chromium_screenshot(html, png, width=WIDTH, height=HEIGHT)
    return {name: png for name, (_, png) in jobs.items()}


@pytest.fixture(scope="module")
def images(screenshots: dict[str, Path]) -> dict[str, Image]:
    return {name: decode_png(path.read_bytes()) for name, path in screenshots.items()}


@pytest.mark.parametrize("name", NAMES)
def test_screenshot_shows_a_whole_readable_message(name: str, screenshots: dict[str, Path],
                                                   images: dict[str, Image]) -> None:
    assert screenshots[name].stat().st_size > 20_000, "suspiciously small PNG"
    image = images[name]
    assert (image.width, image.height) == (WIDTH, HEIGHT)
    colours = image.histogram()
    assert len(colours) > 50, f"only {len(colours)} colours: blank or nearly"
    ink = sum(n for colour, n in colours.items() if max(colour) < 100)
    assert ink > 0.01 * WIDTH * HEIGHT, "hardly any text"
    # Nothing wider than the window: the right-hand margin is page background from top to bottom.
    assert all(image.pixel(WIDTH - 8, y) == BACKGROUND for y in range(HEIGHT)), "the message overflows 900 px"
    # The acknowledgement button is there, green.
    assert image.count(GREEN) > 1_000


def test_warrants_carry_the_red_category_a_banner_at_the_top(images: dict[str, Image]) -> None:
    for name in {"A2", "A3"} & set(images):
        assert images[name].count(RED, 0, 160) > 20_000, name  # the accent bar and the banner, above the headline


def test_other_notices_are_blue_and_have_no_red_banner(images: dict[str, Image]) -> None:
    for name in set(images) - {"A2", "A3", "escalation", DIGEST}:
        assert images[name].count(RED, 0, 160) < 100, name
        assert images[name].count(BLUE) > 2_000, name


def test_escalation_is_red(images: dict[str, Image]) -> None:
    assert images["escalation"].count(RED, 0, 160) > 20_000


def test_digest_rows_are_shaded_by_days_to_release(images: dict[str, Image]) -> None:
    digest = images[DIGEST]
    assert digest.count(PINK) > 20_000 and digest.count(YELLOW) > 10_000
