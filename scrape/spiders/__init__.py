"""One spider per site, and their shared base: the site's address, staying on it, counting unreadable pages.

Every spider takes a `base_url` argument (default: the real site) so that it
can crawl a mirror, such as the local fixture server of the tests. Pages and
failures are counted in the crawl stats under `asciiray/`; `scrape.progress`
turns those counts into the summary `asciiray scrape` shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import scrapy
from scrapy.exceptions import DownloadCancelledError, IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.selector import Selector, SelectorList
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

from scrape.items import RawPiece


def normalize_base_url(url: str) -> str:
    """`url` with a trailing slash; ValueError unless it is an http(s) address with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base URL {url!r} is not an http(s) address such as https://www.asciiart.eu/")
    if parts.query or parts.fragment:
        raise ValueError(f"base URL {url!r} must not have a query or fragment")
    return url if url.endswith("/") else url + "/"


class SiteSpider(scrapy.Spider):
    """Base of the site spiders: parsing helpers only, no storage (that is the pipeline's job)."""

    default_base_url: str = ""

    def __init__(self, base_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = normalize_base_url(base_url or self.default_base_url)
        base = urlsplit(self.base_url)
        self._origin = (base.scheme, base.netloc.lower())
        self._base_path = base.path
        # OffsiteMiddleware drops requests to other hosts; on_site() also pins the port and path.
        self.allowed_domains = [base.hostname]
        self._offsite: set[str] = set()

    def page(self, url: str, callback: Callable[..., Any], **cb_kwargs: Any) -> scrapy.Request:
        """A request for one page of the site whose failures are counted by kind."""
        return scrapy.Request(url, callback=callback, errback=self.failed, cb_kwargs=cb_kwargs)

    def on_site(self, url: str) -> bool:
        """True for an address under the base URL (same scheme, host, port and path prefix)."""
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc.lower()) == self._origin and parts.path.startswith(self._base_path)

    def path_parts(self, url: str) -> list[str]:
        """The decoded path segments of `url` below the base URL, e.g. ["animals", "cats"]."""
        rest = urlsplit(url).path[len(self._base_path):]
        return [unquote(p) for p in rest.split("/") if p]

    def site_links(self, response: TextResponse, css: str) -> list[str]:
        """Absolute on-site addresses of the `href`s the CSS selector finds, in page order, once each.

        Off-site addresses are never followed; each distinct one is counted (`asciiray/offsite`).
        """
        links: list[str] = []
        for href in response.css(css).getall():
            url = response.urljoin(href.strip())
            if not self.on_site(url):
                if url not in self._offsite:
                    self._offsite.add(url)
                    self.crawler.stats.inc_value("asciiray/offsite")
            elif url not in links:
                links.append(url)
        return links

    def piece(self, text: str, labels: list[str], url: str, caption: str = "") -> RawPiece:
        """A raw piece of this site; the pipeline, not the spider, cleans and stores it."""
        return RawPiece(text=text, labels=labels, source=self.name, url=url, caption=caption)

    def count(self, kind: str, url: str, detail: str) -> None:
        """Count and log a page the spider could not use: bad data is reported, never fatal."""
        self.logger.warning("%s (%s): %s", kind, detail, url)
        self.crawler.stats.inc_value(f"asciiray/errors/{kind}")

    def holding(self, response: Response, containers: Iterable[Selector],
                find: Callable[[Selector], SelectorList], what: str) -> Iterator[tuple[Selector, SelectorList]]:
        """Each container with the art `find` finds in it; one with none is counted as malformed (`what`)."""
        for container in containers:
            art = find(container)
            if art:
                yield container, art
            else:
                self.count("malformed", response.url, what)

    def readable(self, response: Response) -> bool:
        """Count the page; False (and counted by kind) when it is binary or empty."""
        self.crawler.stats.inc_value("asciiray/pages")
        if not isinstance(response, TextResponse) or b"\x00" in response.body[:4096]:
            self.count("binary", response.url, response.headers.get("Content-Type", b"?").decode("latin-1"))
            return False
        if not response.body.strip():
            self.count("empty", response.url, "no content")
            return False
        return True

    def failed(self, failure: Failure) -> None:
        """Errback: count a request that produced no page (HTTP error, oversized, network)."""
        url = failure.request.url
        if failure.check(HttpError):
            kind = "http"
            detail = f"HTTP {failure.value.response.status}"
        elif failure.check(DownloadCancelledError, CancelledError):
            kind, detail = "oversized", "larger than DOWNLOAD_MAXSIZE"
        elif failure.check(IgnoreRequest):
            return  # disallowed by robots.txt: scrapy counts it (robotstxt/forbidden)
        else:
            kind, detail = "network", failure.getErrorMessage()
        self.count(kind, url, detail)
