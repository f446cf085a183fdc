"""asciiart.eu: a category tree; labels are the category path of the page (`/animals/cats` -> animals, cats).

Markup understood (both, on any page; the site has served each):

- older: sub-category links in `div.directory-columns li a`; pieces are the
  `pre` elements inside `div.asciiarts`, directly or each in a wrapper div,
  with no caption;
- newer (assumed: a `categories` list and one card per piece):

      <nav class="categories"><ul><li><a href="/animals/cats">Cats</a></li>...</ul></nav>
      <div class="asciiarts">
        <div class="art-card"><p>Cat by jgs</p><pre>...</pre></div>
      </div>

  sub-category links are any `a` inside an element of class `categories`;
  each piece is a block under `div.asciiarts` whose text before the `pre` is
  the caption.

Index pages (links only) and leaf pages (pieces only) are told apart by what
they hold, not by their address. A page with neither is counted `empty`; a
`div.asciiarts` without any `pre` is counted `malformed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from scrapy.http import Response

from scrape.html import caption_before, pre_text
from scrape.spiders import SiteSpider

CATEGORY_LINKS = "div.directory-columns li a::attr(href), .categories a::attr(href)"


class AsciiArtEuSpider(SiteSpider):
    name = "asciiart.eu"
    default_base_url = "https://www.asciiart.eu/"

    async def start(self) -> AsyncIterator[Any]:
        yield self.page(self.base_url, self.parse_page)

    def parse_page(self, response: Response) -> Iterator[Any]:
        if not self.readable(response):
            return
        links = self.site_links(response, CATEGORY_LINKS)
        for url in links:
            yield self.page(url, self.parse_page)
        containers = response.css("div.asciiarts")
        labels = self.path_parts(response.url)
        for container, arts in self.holding(response, containers, lambda c: c.css("pre"),
                                            "div.asciiarts holds no <pre>"):
            for art in arts:
                block = art.root.getparent()
                caption = "" if block is container.root else caption_before(block, art)
                yield self.piece(pre_text(art), labels, response.url, caption)
        if not links and not containers:
            self.count("empty", response.url, "no category links and no div.asciiarts")
