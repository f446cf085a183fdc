"""The one item the spiders produce: a piece of art as a browser shows it, with where it came from."""

from __future__ import annotations

import scrapy


class RawPiece(scrapy.Item):
    """A raw piece: text exactly as shown (not normalised), before `asciiray corpus build` cleans it."""

    text = scrapy.Field()  # str: the art, as a browser shows it (CR LF already LF, trailing spaces kept)
    labels = scrapy.Field()  # list[str]: category path parts, or the tag of the page it was found on
    source = scrapy.Field()  # str: the site, e.g. "asciiart.eu"
    url = scrapy.Field()  # str: the page the piece came from
    caption = scrapy.Field()  # str: attribution/title text beside the piece, or ""
