"""Scrapy settings of the asciiray crawler: polite by default.

`scrape.crawl` loads this module and overrides, per crawl, what the
`asciiray scrape` options control (delay, concurrency, robots.txt, page
limit, HTTP cache, download timeout) and where the output, job directory and
cache go. Defaults here are for a crawl of a real site.
"""

BOT_NAME = "asciiray"
SPIDER_MODULES = ["scrape.spiders"]
NEWSPIDER_MODULE = "scrape.spiders"

# Identify ourselves and honour the site's rules.
USER_AGENT = "asciiray-scraper/0.1 (+https://github.com/asciiray/asciiray; research corpus of ASCII art)"
ROBOTSTXT_OBEY = True

# One site per crawl: at most 2 requests in flight, at least 1 s between request starts.
# The delay is not randomised, so it is never shorter than configured; AutoThrottle
# only ever lengthens it (its minimum is DOWNLOAD_DELAY) when the site slows down.
CONCURRENT_REQUESTS = 2
CONCURRENT_REQUESTS_PER_DOMAIN = 2
DOWNLOAD_DELAY = 1.0
DOWNLOAD_DELAY_JITTER = 0
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 60.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0

# Transient failures are retried; a page that stays broken is counted, not fatal.
RETRY_ENABLED = True
RETRY_TIMES = 2
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]
DOWNLOAD_TIMEOUT = 30

# Art pages are small: anything over 2 MiB is not a page of art (cancelled and counted).
DOWNLOAD_MAXSIZE = 2 * 1024 * 1024
DOWNLOAD_WARNSIZE = 512 * 1024

# Optional HTTP cache (`asciiray scrape --http-cache DIR`): a crawl re-reads the pages it already
# has from DIR instead of the site. Entries never expire; transient errors are not cached.
HTTPCACHE_ENABLED = False
HTTPCACHE_EXPIRATION_SECS = 0
HTTPCACHE_IGNORE_HTTP_CODES = RETRY_HTTP_CODES

# No cookies, and no control server (telnet console, remote control) listening on a port.
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False

# Output: raw pieces go through the shard pipeline (not a feed export: it de-duplicates
# across resumed runs and never rewrites a shard); progress goes to the parent process.
ITEM_PIPELINES = {"scrape.pipelines.JsonLinesShards": 300}
EXTENSIONS = {"scrape.progress.ProgressReport": 500}
ASCIIRAY_OUT_DIR = None
ASCIIRAY_SHARD_PIECES = 10_000
ASCIIRAY_PROGRESS_INTERVAL = 0.0

LOG_LEVEL = "INFO"
