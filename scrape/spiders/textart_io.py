"""textart.io: tag pages `art/tag/<tag>/<page>`, numbered from 1 until a page holds no piece.

Assumed entry point: the tag list `art/tags`, whose links to `art/tag/<tag>`
(with or without a page number) name the tags; links to further `art/tags...`
pages (a paginated list) are followed too. Tag pages also link to other tags
(each piece shows its tags), and those are followed: every tag is crawled
from page 1. Each piece is the `pre` inside a `div.ascii-wrapper`, its caption
the wrapper's text before the `pre`; a wrapper without a `pre` is counted
`malformed`. A tag page without any wrapper ends that tag (not an error).

The same piece recurs under several tags. Each occurrence is yielded with the
one tag of its page as its label; `asciiray corpus build` keeps one copy per
content hash with the union of the labels (see `scrape.pipelines`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import scrapy
from scrapy.http import Response

from scrape.html import caption_before, pre_text
from scrape.spiders import SiteSpider


class TextArtIoSpider(SiteSpider):
    name = "textart.io"
    default_base_url = "https://textart.io/"

    async def start(self) -> AsyncIterator[Any]:
        yield self.page(self.base_url + "art/tags", self.parse_tags)

    def tag_page(self, tag: str, number: int) -> scrapy.Request:
        """Page `number` of a tag (pages are numbered from 1)."""
        url = f"{self.base_url}art/tag/{quote(tag, safe='')}/{number}"
        return self.page(url, self.parse_tag, tag=tag, number=number)

    def tag_requests(self, response: Response) -> list[scrapy.Request]:
        """Page 1 of every tag linked from the page, and any further tag-list page."""
        requests = []
        for url in self.site_links(response, "a::attr(href)"):
            parts = self.path_parts(url)
            if parts[:2] == ["art", "tag"] and len(parts) in (3, 4):
                requests.append(self.tag_page(parts[2], 1))
            elif parts[:2] == ["art", "tags"]:
                requests.append(self.page(url, self.parse_tags))
        return requests

    def parse_tags(self, response: Response) -> Iterator[Any]:
        if not self.readable(response):
            return
        requests = self.tag_requests(response)
        if not requests:
            self.count("empty", response.url, "tag list without tag links")
        yield from requests

    def parse_tag(self, response: Response, tag: str, number: int) -> Iterator[Any]:
        if not self.readable(response):
            return
        wrappers = response.css("div.ascii-wrapper")
        for wrapper, art in self.holding(response, wrappers, lambda w: w.css("pre"),
                                         "div.ascii-wrapper holds no <pre>"):
            yield self.piece(pre_text(art[0]), [tag], response.url, caption_before(wrapper, art[0]))
        if wrappers:
            yield self.tag_page(tag, number + 1)
        yield from self.tag_requests(response)
