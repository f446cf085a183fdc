"""The embedded default corpus: words rendered in every FIGlet font (pyfiglet).

It lets `asciiray train` run out of the box, with no download and no scrape.
It is built offline, deterministically, through the same CorpusBuilder as any
scraped corpus, and shipped in `asciiray/data/figlet/`. Rebuild it with

    python -m asciiray.embedded --out asciiray/data/figlet
"""

from __future__ import annotations

import logging
from pathlib import Path

from asciiray.corpus import CorpusBuilder, Limits

log = logging.getLogger(__name__)

DEFAULT_CORPUS: str = str(Path(__file__).resolve().parent / "data" / "figlet")
# What a model made to travel (the shipped one) records as its corpus: this install's embedded corpus.
NAME = "embedded"


def resolve(uri: str | None) -> str | None:
    """The embedded corpus's directory for the name `embedded`; any other URI unchanged."""
    return DEFAULT_CORPUS if uri == NAME else uri

# Short, so that most fonts fit 64 columns; mixed case, digits and names for variety.
WORDS: tuple[str, ...] = (
    "Ray", "ASCII", "art", "VAE", "cat", "dog", "owl", "fox", "bee", "yak",
    "fish", "frog", "bear", "wolf", "moon", "sun", "star", "tree", "rose", "wave",
    "hello", "code", "data", "grid", "font", "byte", "Ada", "Bob", "Eve", "Zoe",
    "Max", "Ivy", "Leo", "Kim", "Tom", "Una", "42", "2048", "OK", "hi!",
)
RENDER_WIDTH = 1000  # wide enough that pyfiglet never wraps; the builder rejects what exceeds the grid


def build_embedded(out: str, max_fonts: int | None = None) -> dict:
    """Render WORDS in every pyfiglet font (sorted; the first `max_fonts` of them) and write the corpus to `out`.

    Fonts that fail to load or render are counted as `font_error` / `render_error`
    per word; output that is not printable ASCII or does not fit the grid is
    rejected and counted by the builder like any raw piece.
    """
    import pyfiglet

    builder = CorpusBuilder(Limits())
    fonts = sorted(pyfiglet.FigletFont.getFonts())[:max_fonts]
    for font in fonts:
        try:
            fig = pyfiglet.Figlet(font=font, width=RENDER_WIDTH)
        except Exception:  # noqa: BLE001 - a broken font file is counted, whatever pyfiglet raises
            log.debug("font %s does not load", font, exc_info=True)
            for _ in WORDS:
                builder.reject("font_error")
            continue
        for word in WORDS:
            try:
                text = fig.renderText(word)
            except Exception:  # noqa: BLE001 - same: a font's own bug must not stop the build
                builder.reject("render_error")
                continue
            builder.add(text, ["figlet", font], "figlet", caption=word)
    log.info("embedded corpus: %d fonts x %d words -> %d pieces", len(fonts), len(WORDS), builder.accepted)
    return builder.write(out)


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Rebuild the embedded FIGlet corpus (deterministic).")
    parser.add_argument("--out", default=DEFAULT_CORPUS, help="output directory or s3:// prefix")
    parser.add_argument("--max-fonts", type=int, default=None, help="only the first N fonts (sorted by name)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    manifest = build_embedded(args.out, args.max_fonts)
    print(json.dumps({k: manifest[k] for k in ("rows", "shards", "sources", "rejected")}, indent=2))
