"""Crawl progress for the parent process: counts as JSON lines on stdout.

The crawl runs in a child process (see `scrape.crawl`); this extension writes
`{"event": "progress", ...}` every ASCIIRAY_PROGRESS_INTERVAL seconds and
`{"event": "closed", "reason": ..., ...}` when the spider closes. If stdout is
gone (the parent died), the crawl is stopped gracefully, so its job directory
stays resumable and no orphan keeps crawling.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.utils.defer import deferred_from_coro
from twisted.internet.task import LoopingCall

logger = logging.getLogger(__name__)

# Pages the spider could not use, and pieces the pipeline dropped, by kind.
ERROR_KINDS = ("http", "network", "oversized", "binary", "empty", "malformed", "blank")


def summarize(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The counts `asciiray scrape` reports, from a crawl's scrapy stats."""
    return {
        "pages": stats.get("asciiray/pages", 0),
        "pieces": stats.get("asciiray/pieces", 0),
        "duplicates": stats.get("asciiray/duplicates", 0),
        "errors": {kind: stats.get(f"asciiray/errors/{kind}", 0) for kind in ERROR_KINDS},
        "skipped": {"robots": stats.get("robotstxt/forbidden", 0),
                    "offsite": stats.get("asciiray/offsite", 0) + stats.get("offsite/filtered", 0)},
    }


class ProgressReport:
    """Scrapy extension: the crawl's summary as a JSON line, periodically and at the end."""

    def __init__(self, crawler: Crawler, interval: float) -> None:
        self.crawler = crawler
        self.interval = interval
        self.task = LoopingCall(self.report)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ProgressReport:
        interval = crawler.settings.getfloat("ASCIIRAY_PROGRESS_INTERVAL")
        if interval <= 0:
            raise NotConfigured
        ext = cls(crawler, interval)
        crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def spider_opened(self, spider: Any) -> None:
        self._emit({"event": "progress"})  # at once: the parent learns the crawl has started
        self.task.start(self.interval, now=False)

    def spider_closed(self, spider: Any, reason: str) -> None:
        if self.task.running:
            self.task.stop()
        self._emit({"event": "closed", "reason": reason})

    def report(self) -> None:
        # Stopping before the engine runs would be lost (and leave the process waiting forever),
        # so a crawl whose reader is gone is stopped at the first tick after it started.
        if self._emit({"event": "progress"}) or not self.crawler.engine.running:
            return
        self.task.stop()
        logger.warning("progress reader is gone: stopping the crawl gracefully")
        deferred_from_coro(self.crawler.stop_async())

    def _emit(self, head: dict[str, Any]) -> bool:
        """Write one line; False when nobody reads it any more."""
        line = json.dumps({**head, **summarize(self.crawler.stats.get_stats())})
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            return False
        return True
