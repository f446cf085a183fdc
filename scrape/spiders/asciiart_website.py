"""asciiart.website: pages `index.php?art=<category path>`; labels are the parts of that path.

Category paths hold spaces and parentheses (`animals/birds (land)`), so they
are read from the decoded query, never from the URL path. Every on-site link
to `index.php?art=...` is followed (the root page lists the top categories,
category pages list their sub-categories). Each piece is the element just
before a `button.copybutton` (a `pre` on the site); its text is what a browser
shows for it. A copy button with nothing before it is counted `malformed`; a
page with neither category links nor copy buttons is counted `empty`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from scrapy.http import Response

from scrape.html import pre_text
from scrape.spiders import SiteSpider


def art_path(url: str) -> str | None:
    """The decoded `art=` parameter of an index.php address, or None for any other address."""
    parts = urlsplit(url)
    if not parts.path.endswith("/index.php"):
        return None
    values = parse_qs(parts.query).get("art")
    return values[0] if values else None


class AsciiArtWebsiteSpider(SiteSpider):
    name = "asciiart.website"
    default_base_url = "https://www.asciiart.website/"

    async def start(self) -> AsyncIterator[Any]:
        yield self.page(self.base_url, self.parse_page)

    def parse_page(self, response: Response) -> Iterator[Any]:
        if not self.readable(response):
            return
        links = [url for url in self.site_links(response, "a::attr(href)") if art_path(url)]
        for url in links:
            yield self.page(url, self.parse_page)
        labels = [p for p in (art_path(response.url) or "").split("/") if p]
        buttons = response.css("button.copybutton")
        for _, art in self.holding(response, buttons, lambda b: b.xpath("preceding-sibling::*[1]"),
                                   "button.copybutton with no element before it"):
            yield self.piece(pre_text(art[0]), labels, response.url)
        if not links and not buttons:
            self.count("empty", response.url, "no category links and no copy buttons")
