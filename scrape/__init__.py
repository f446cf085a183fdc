"""Corpus acquisition: a scrapy project with one spider per public ASCII-art site.

Spiders only parse pages into `RawPiece` items; the pipeline stores them as
JSON Lines shards that `asciiray corpus build` cleans. `scrape.crawl.crawl`
runs one spider in a child process (Twisted's reactor runs once per process)
and is what `asciiray scrape` calls.
"""
