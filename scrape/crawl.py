"""Run one site's spider: `crawl()` is what `asciiray scrape` calls; `main()` is the child process.

Twisted's reactor starts only once per process, so every crawl runs in a fresh
child, `python -m scrape.crawl SPEC`, which also keeps callers (the CLI, the
tests) free of reactor state. The child reports progress as JSON lines on
stdout (`scrape.progress`) and logs to `OUT/.crawl/crawl.log`.

Every crawl is resumable. The output directory holds:

    OUT/pieces-NNNNN.jsonl    raw pieces (scrape.pipelines)
    OUT/.crawl/site.json      the site and base URL crawled here (a resume must match)
    OUT/.crawl/job/           scrapy's JOBDIR: requests seen and requests still to fetch
    OUT/.crawl/crawl.log      the child's log, appended by every run

The optional HTTP cache lives wherever `http_cache` says, outside any one
crawl: a crawl into a new directory (say, after a parser change) then reads
the pages it already has from disk instead of from the site.

A crawl stopped gracefully (Ctrl-C once, SIGTERM, or `max_pages`) lets the
pages in flight finish, stores their pieces and saves the pending requests;
`resume=True` continues from there and fetches no page twice (robots.txt
excepted: it is read once per run). A second Ctrl-C stops at once and loses
the pages that were in flight.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class CrawlOptionError(ValueError):
    """An option or output directory a crawl cannot use; the message names it and the fix."""

SITES = ("asciiart.eu", "asciiart.website", "textart.io")
DEFAULT_DELAY = 1.0
DEFAULT_CONCURRENCY = 2
DEFAULT_TIMEOUT = 30.0
STATE_DIR = ".crawl"


def _check(site: str, out: str, base_url: str | None, max_pages: int | None, delay: float,
           concurrency: int, timeout: float, http_cache: str | None) -> str | None:
    """Validate the options; the normalised base URL (None: the site's own)."""
    from scrape.spiders import normalize_base_url

    if site not in SITES:
        raise CrawlOptionError(f"unknown site {site!r}: choose one of {', '.join(SITES)}")
    if "://" in out:
        raise CrawlOptionError(f"--out {out}: scrape writes to a local directory; "
                        "`asciiray corpus build` can then write the corpus to s3://")
    if Path(out).exists() and not Path(out).is_dir():
        raise CrawlOptionError(f"--out {out} is a file: pass a directory")
    if http_cache and "://" in http_cache:
        raise CrawlOptionError(f"--http-cache {http_cache}: pass a local directory")
    if max_pages is not None and max_pages < 1:
        raise CrawlOptionError(f"--max-pages {max_pages}: pass a positive number of pages")
    if delay < 0:
        raise CrawlOptionError(f"--delay {delay}: pass a number of seconds >= 0")
    if concurrency < 1:
        raise CrawlOptionError(f"--concurrency {concurrency}: pass at least 1")
    if timeout <= 0:
        raise CrawlOptionError(f"--timeout {timeout}: pass a positive number of seconds")
    if base_url is None:
        return None
    try:
        return normalize_base_url(base_url)
    except ValueError as exc:
        raise CrawlOptionError(f"--base-url: {exc}") from None


def _claim(out_dir: Path, site: str, base_url: str | None, resume: bool) -> None:
    """Refuse to mix crawls in one directory; record which crawl this directory holds."""
    state = out_dir / STATE_DIR
    marker = state / "site.json"
    here = {"site": site, "base_url": base_url}
    started = marker.exists() or any(out_dir.glob("pieces-*.jsonl"))
    if started and not resume:
        raise CrawlOptionError(f"--out {out_dir} already holds a crawl: pass --resume to continue it, "
                        "or choose an empty directory")
    if marker.exists():
        before = json.loads(marker.read_text())
        if before != here:
            raise CrawlOptionError(f"--out {out_dir} holds a crawl of {before['site']} from "
                            f"{before['base_url'] or 'the site itself'}: resume it with the same site "
                            "and --base-url, or choose another directory")
    state.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(here) + "\n")


def crawl(site: str, out: str, *, base_url: str | None = None, max_pages: int | None = None,
          delay: float = DEFAULT_DELAY, concurrency: int = DEFAULT_CONCURRENCY, resume: bool = False,
          obey_robots: bool = True, http_cache: str | None = None, timeout: float = DEFAULT_TIMEOUT,
          progress: Callable[[dict[str, Any]], None] | None = None,
          progress_interval: float = 5.0) -> dict[str, Any]:
    """Crawl `site` into the local directory `out`; the final counts and why the crawl stopped.

    Returns pages, pieces, duplicates, errors (by kind), skipped (robots, offsite),
    finish_reason ("finished", "closespider_pagecount" after max_pages responses,
    robots.txt and error pages included, or "shutdown" after an interrupt) and
    the log's path. `progress` gets the same counts every
    `progress_interval` seconds. `http_cache`: a directory where responses are
    kept and answered from (never expiring). Ctrl-C stops the crawl gracefully
    (resumable); a second Ctrl-C stops it at once.
    """
    base = _check(site, out, base_url, max_pages, delay, concurrency, timeout, http_cache)
    out_dir = Path(out).resolve()
    _claim(out_dir, site, base, resume)
    spec = {"site": site, "out": str(out_dir), "base_url": base, "max_pages": max_pages, "delay": delay,
            "concurrency": concurrency, "obey_robots": obey_robots,
            "http_cache": str(Path(http_cache).resolve()) if http_cache else None,
            "timeout": timeout, "progress_interval": progress_interval}
    log_path = out_dir / STATE_DIR / "crawl.log"
    logger.info("crawling %s (%s) into %s; log: %s", site, base or "the site itself", out_dir, log_path)
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "scrape.crawl", json.dumps(spec)],
                                stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        final, interrupted = _follow(proc, progress)
    if final is None:
        if interrupted:
            raise KeyboardInterrupt
        raise RuntimeError(f"the crawl of {site} failed (exit status {proc.returncode}); see {log_path}")
    return {"site": site, "out": str(out_dir), "finish_reason": final.pop("reason"), "log": str(log_path),
            **{k: v for k, v in final.items() if k != "event"}}


def _follow(proc: subprocess.Popen, progress: Callable[[dict[str, Any]], None] | None) -> tuple[dict | None, bool]:
    """Read the child's JSON lines until it exits; forward Ctrl-C to it. (final event, interrupted)."""
    final = None
    interrupted = False
    while True:
        try:
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    logger.debug("crawler said: %s", line.rstrip())
                    continue
                if event.get("event") == "closed":
                    final = event
                elif progress is not None:
                    progress({k: v for k, v in event.items() if k != "event"})
            break
        except KeyboardInterrupt:
            # The child runs in its own session, so it sees only the signals passed on here:
            # the first stops it gracefully, a second at once (scrapy's own handling).
            interrupted = True
            logger.warning("interrupted: letting the pages in flight finish (Ctrl-C again to stop at once)")
            proc.send_signal(signal.SIGINT)
    proc.wait()
    return final, interrupted


def main(argv: list[str] | None = None) -> int:
    """Child process: run one spider with the options of a JSON spec (see `crawl`)."""
    from scrapy.crawler import CrawlerProcess
    from scrapy.settings import Settings

    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    state = Path(spec["out"]) / STATE_DIR
    settings = Settings()
    settings.setmodule("scrape.settings", priority="project")
    settings.setdict({
        "ASCIIRAY_OUT_DIR": spec["out"],
        "ASCIIRAY_PROGRESS_INTERVAL": spec["progress_interval"],
        "JOBDIR": str(state / "job"),
        "DOWNLOAD_DELAY": spec["delay"],
        "AUTOTHROTTLE_START_DELAY": spec["delay"],
        "AUTOTHROTTLE_MAX_DELAY": max(60.0, spec["delay"]),
        "CONCURRENT_REQUESTS": spec["concurrency"],
        "CONCURRENT_REQUESTS_PER_DOMAIN": spec["concurrency"],
        "ROBOTSTXT_OBEY": spec["obey_robots"],
        "CLOSESPIDER_PAGECOUNT": spec["max_pages"] or 0,
        "DOWNLOAD_TIMEOUT": spec["timeout"],
    }, priority="cmdline")
    if spec["http_cache"]:
        settings.setdict({"HTTPCACHE_ENABLED": True, "HTTPCACHE_DIR": spec["http_cache"]}, priority="cmdline")
    process = CrawlerProcess(settings)
    kwargs = {"base_url": spec["base_url"]} if spec["base_url"] else {}
    process.crawl(spec["site"], **kwargs)
    process.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
