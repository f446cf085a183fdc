"""The crawler against a local HTTP server (127.0.0.1 only) serving fixture pages in each site's structure.

Fixture pages live in tests/fixtures/sites/<site>/; the routes below map the
addresses of the fake site to them, plus pages that misbehave on purpose (a
500 that succeeds on retry, binary, oversized, empty). Each site's
`expected.json` holds the raw pieces a browser shows on those pages, written
by hand (lines of text, so whitespace is explicit). Every crawl runs in its own
child process with delay 0, so a crawl takes a few seconds.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from asciiray.cli import main as cli_main
from scrape.crawl import crawl
from scrape.html import caption_before, pre_text
from scrape.progress import ERROR_KINDS
from tests.conftest import wait_until

FIXTURES = Path(__file__).parent / "fixtures" / "sites"
USER_AGENT = "asciiray-scraper/0.1 (+https://github.com/asciiray/asciiray; research corpus of ASCII art)"
BIG = 3 * 1024 * 1024  # over DOWNLOAD_MAXSIZE (2 MiB)


@dataclass(frozen=True)
class Page:
    """How the fixture server answers one address."""

    file: str = ""  # fixture file; "__PORT__" in it becomes the server's port
    kind: str = "html"  # html | binary | huge (Content-Length) | stream (no length) | empty
    crlf: bool = False  # serve with CR LF line ends
    fail_first: bool = False  # answer 500 to the first request


class FixtureServer:
    """A threaded HTTP server on a free loopback port that records every request it gets."""

    def __init__(self, root: Path, routes: dict[str, Page], gate: str | None = None) -> None:
        self.root, self.routes, self.gate = root, routes, gate
        self.opened = threading.Event()  # set: the gated page is served
        self.requests: list[tuple[float, str, str]] = []  # (time, decoded path, user agent)
        self.in_flight = self.max_in_flight = 0
        self.failed: set[str] = set()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FixtureServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.opened.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths(self) -> list[str]:
        with self.lock:
            return [path for _, path, _ in self.requests]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                path = unquote(self.path)
                with server.lock:
                    server.requests.append((time.monotonic(), path, self.headers.get("User-Agent", "")))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self.answer(path)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (an oversized response)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def answer(self, path: str) -> None:
                page = server.routes.get(path)
                if page is None:
                    return self.send(404, b"<html><body>Not found</body></html>")
                if path == server.gate:
                    server.opened.wait(90)
                with server.lock:
                    fail = page.fail_first and path not in server.failed
                    server.failed.add(path)
                if fail:
                    return self.send(500, b"<html><body>Internal error</body></html>")
                if page.kind == "binary":
                    return self.send(200, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "image/png")
                if page.kind == "huge":
                    return self.send(200, b"<html><body><pre>" + b"x" * BIG)
                if page.kind == "stream":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.end_headers()
                    for _ in range(BIG // 65536):
                        self.wfile.write(b"y" * 65536)
                    return None
                if page.kind == "empty":
                    return self.send(200, b"")
                body = (server.root / page.file).read_text(encoding="utf-8").replace("__PORT__", str(server.port))
                if page.crlf:
                    body = body.replace("\n", "\r\n")
                kind = "text/plain" if page.file.endswith(".txt") else "text/html"
                return self.send(200, body.encode("utf-8"), f"{kind}; charset=utf-8")

            def send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


EU_OLD = {
    "/robots.txt": Page("robots.txt"),
    "/": Page("index.html"),
    "/animals": Page("animals.html"),
    "/animals/cats": Page("cats.html", crlf=True),
    "/animals/dogs": Page("dogs.html", fail_first=True),
    "/animals/insects": Page("insects.html"),
    "/animals/insects/bees": Page("bees.html"),
    "/animals/secret": Page("secret.html"),  # disallowed by robots.txt
    "/animals/logo": Page(kind="binary"),
    "/animals/huge": Page(kind="huge"),
    "/animals/stream": Page(kind="stream"),
    "/animals/empty": Page(kind="empty"),
    "/animals/broken": Page("broken.html"),
    "/animals/nothing": Page("nothing.html"),
    "/computers": Page("computers.html"),
}  # /animals/unicorns, /about: 404 (unicorns is linked, /about is outside the category list)
EU_NEW = {
    "/robots.txt": Page("robots.txt"),
    "/": Page("index.html"),
    "/animals": Page("animals.html"),
    "/animals/cats": Page("cats.html"),
    "/animals/insects": Page("insects.html"),
    "/animals/insects/bees": Page("bees.html"),
    "/holidays": Page("holidays.html", crlf=True),
    "/private": Page("private.html"),  # disallowed by robots.txt
}
WEBSITE = {
    "/robots.txt": Page("robots.txt"),
    "/": Page("index.html"),
    "/index.php?art=animals": Page("animals.html"),
    "/index.php?art=animals/birds (land)": Page("birds.html"),
    "/index.php?art=animals/cats": Page("cats.html", fail_first=True),
    "/index.php?art=people": Page("people.html"),
    "/index.php?art=people/faces": Page("faces.html"),
    "/index.php?art=private": Page("private.html"),  # disallowed by robots.txt
}


def textart_routes(flaky: bool) -> dict[str, Page]:
    routes = {
        "/robots.txt": Page("robots.txt"),
        "/art/tags": Page("tags.html"),
        "/art/tags/2": Page("tags-2.html"),
        "/art/tag/cat/1": Page("cat-1.html"),
        "/art/tag/cat/2": Page("cat-2.html", crlf=True),
        "/art/tag/animal/1": Page("animal-1.html"),
        "/art/tag/kitten/1": Page("kitten-1.html", fail_first=flaky),
        "/art/tag/bird/1": Page("bird-1.html"),
        "/art/tag/secret/1": Page("secret-1.html"),  # disallowed by robots.txt
    }
    for tag, last in [("cat", 3), ("animal", 2), ("kitten", 2), ("bird", 2)]:
        routes[f"/art/tag/{tag}/{last}"] = Page("end.html")  # the page with no piece that ends a tag
    return routes  # /art/tag/missing/1: 404


def read_pieces(out: Path) -> list[dict]:
    records = []
    for shard in sorted(out.glob("pieces-*.jsonl")):
        records += [json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines()]
    return records


def expected_pieces(fixture_dir: Path, site: str, base_url: str) -> list[dict]:
    return [{"text": "\n".join(e["lines"]), "labels": e["labels"], "source": site,
             "url": base_url.rstrip("/") + e["path"], "caption": e["caption"]}
            for e in json.loads((fixture_dir / "expected.json").read_text(encoding="utf-8"))]


def ordered(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: json.dumps(r, sort_keys=True))


def assert_crawled(out: Path, expected: list[dict]) -> None:
    """The raw pieces are exactly the expected ones, and `asciiray corpus build`'s cleaning of them keeps
    each valid piece once, with the labels of all its occurrences (the tags of a textart.io piece)."""
    from asciiray import charset
    from asciiray.corpus import CorpusBuilder, ingest

    assert ordered(read_pieces(out)) == ordered(expected)
    builder = CorpusBuilder()
    ingest(builder, str(out))  # the crawl state under OUT/.crawl is not read
    built = {row["text"]: (set(row["labels"]), row["source"]) for row in builder.table().to_pylist()}
    want: dict[str, tuple[set[str], str]] = {}
    for piece in expected:
        text = charset.normalize(piece["text"])
        if all(c == "\n" or " " <= c <= "~" for c in text):  # tabs and non-ASCII are rejected
            want.setdefault(text, (set(), piece["source"]))[0].update(piece["labels"])
    assert built == want


def run_crawl(site: str, server: FixtureServer, out: Path, **options) -> dict:
    options = {"delay": 0.0, "concurrency": 2, "timeout": 30.0, "progress_interval": 0.2, **options}
    return crawl(site, str(out), base_url=server.base_url, **options)


def errors(**nonzero: int) -> dict[str, int]:
    return {kind: nonzero.get(kind, 0) for kind in ERROR_KINDS}


def assert_polite(server: FixtureServer, disallowed: str, offsite: str) -> None:
    """robots.txt read first and obeyed, our user agent on every request, nothing off-site followed."""
    paths = server.paths()
    assert paths[0] == "/robots.txt"
    assert disallowed not in paths
    assert not any(offsite in p for p in paths)
    assert {ua for _, _, ua in server.requests} == {USER_AGENT}


# --- the text a browser shows -------------------------------------------------------------------


@pytest.mark.parametrize("html, shown", [
    ("<pre>a &lt;b&gt; &amp; &quot;c&quot; &#39;d&#x27; &#92;</pre>", "a <b> & \"c\" 'd' \\"),
    ("<pre>one<br>two<br/>three</pre>", "one\ntwo\nthree"),
    ("<pre><span>sp<b>an</b></span> <font color=red>red</font> <a href='x'>link</a></pre>", "span red link"),
    ("<pre>\n  the newline right after the start tag is dropped\n</pre>",
     "  the newline right after the start tag is dropped\n"),
    ("<pre>\n\nonly that one</pre>", "\nonly that one"),
    ("<pre><span>\n</span>x</pre>", "\nx"),
    ("<pre>a\r\nb\rc   \n</pre>", "a\nb\nc   \n"),
    ("<pre>x<!-- hidden --><script>var y;</script><style>p{}</style>z</pre>", "xz"),
    ("<pre> <(o)> </pre>", " <(o)> "),
    ("<pre>\ttab caf&eacute; &nbsp;</pre>", "\ttab caf\u00e9 \u00a0"),
])
def test_pre_text_is_what_a_browser_shows(html: str, shown: str) -> None:
    assert pre_text(html) == shown


def test_caption_is_the_text_before_the_art() -> None:
    import lxml.html

    block = lxml.html.fragment_fromstring("<div><p>Cat <b>by</b>\n jgs</p><pre>art</pre><p>after</p></div>")
    assert caption_before(block, block.find("pre")) == "Cat by jgs"


# --- storage ----------------------------------------------------------------------------------------


def test_pipeline_appends_shards_and_never_stores_a_piece_twice(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from scrapy.exceptions import DropItem

    from scrape.items import RawPiece
    from scrape.pipelines import JsonLinesShards

    counts: collections.Counter[str] = collections.Counter()
    crawler = SimpleNamespace(stats=SimpleNamespace(inc_value=lambda key: counts.update([key])))

    def piece(text: str, tag: str) -> RawPiece:
        return RawPiece(text=text, labels=[tag], source="textart.io", url=f"http://x/{tag}", caption="")

    first = JsonLinesShards(str(tmp_path), 2, crawler)
    first.open_spider()
    for item in [piece("a\r\nb  ", "cat"), piece("c", "cat"), piece("a\r\nb  ", "animal")]:
        first.process_item(item)
    first.close_spider()
    with (tmp_path / "pieces-00001.jsonl").open("a") as f:
        f.write('{"text": "cut short by a hard ki')  # a run killed in the middle of a line
    second = JsonLinesShards(str(tmp_path), 2, crawler)
    second.open_spider()
    for item in [piece("c", "cat"), piece(" \n ", "cat")]:
        with pytest.raises(DropItem):
            second.process_item(item)
    second.process_item(piece("d", "cat"))
    second.close_spider()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pieces-00000.jsonl", "pieces-00001.jsonl", "pieces-00002.jsonl"]
    assert [(r["text"], r["labels"]) for r in read_pieces(tmp_path)] == [
        ("a\r\nb  ", ["cat"]), ("c", ["cat"]), ("a\r\nb  ", ["animal"]), ("d", ["cat"])]
    assert counts == {"asciiray/pieces": 4, "asciiray/duplicates": 1, "asciiray/errors/blank": 1}


# --- one crawl per site ---------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("markup", ["old", "new"])
def test_asciiart_eu(tmp_path: Path, markup: str) -> None:
    fixture_dir = FIXTURES / "asciiart.eu" / markup
    with FixtureServer(fixture_dir, EU_OLD if markup == "old" else EU_NEW) as server:
        seen: list[dict] = []
        result = run_crawl("asciiart.eu", server, tmp_path, progress=seen.append)
    assert_crawled(tmp_path, expected_pieces(fixture_dir, "asciiart.eu", server.base_url))
    assert result["finish_reason"] == "finished"
    assert seen and seen[-1]["pages"] <= result["pages"]  # progress was reported while crawling
    paths = server.paths()
    if markup == "old":
        assert_polite(server, "/animals/secret", "/animals/offsite")
        assert result["errors"] == errors(http=1, oversized=2, binary=1, empty=1, malformed=1)
        assert result["skipped"] == {"robots": 1, "offsite": 2}
        assert paths.count("/animals/dogs") == 2  # 500, then retried
        assert "/about" not in paths  # only links of the category list are followed
        assert result["pages"] == 11 and result["pieces"] == 8
    else:
        assert_polite(server, "/private", "/offsite")
        assert result["errors"] == errors()
        assert result["skipped"] == {"robots": 1, "offsite": 1}
        assert "/artists/jgs" not in paths
        assert result["pages"] == 6 and result["pieces"] == 4
    assert all(n == 1 for p, n in collections.Counter(paths).items() if p != "/animals/dogs")


@pytest.mark.integration
def test_asciiart_website_within_delay_and_concurrency(tmp_path: Path) -> None:
    fixture_dir = FIXTURES / "asciiart.website"
    with FixtureServer(fixture_dir, WEBSITE) as server:
        result = run_crawl("asciiart.website", server, tmp_path, delay=0.2, concurrency=2)
    assert_crawled(tmp_path, expected_pieces(fixture_dir, "asciiart.website", server.base_url))
    assert_polite(server, "/index.php?art=private", "offsite")
    assert result["errors"] == errors(http=1, malformed=1)  # animals/unicorns: 404; a copy button alone
    assert result["skipped"] == {"robots": 1, "offsite": 1}
    assert server.paths().count("/index.php?art=animals/cats") == 2  # 500, then retried
    assert "/about.php" not in server.paths()
    times = [t for t, path, _ in server.requests if path != "/robots.txt"]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert sum(gaps) / len(gaps) >= 0.19 and min(gaps) > 0.1  # 0.2 s between request starts (+ jitter)
    assert server.max_in_flight <= 2


@pytest.mark.integration
def test_textart_io_pagination_and_tags_then_from_the_http_cache(tmp_path: Path) -> None:
    fixture_dir = FIXTURES / "textart.io"
    out, cache = tmp_path / "raw", tmp_path / "cache"
    with FixtureServer(fixture_dir, textart_routes(flaky=True)) as server:
        result = run_crawl("textart.io", server, out, http_cache=str(cache))
        fetched = len(server.requests)
        again = run_crawl("textart.io", server, tmp_path / "again", http_cache=str(cache))
    expected = expected_pieces(fixture_dir, "textart.io", server.base_url)
    assert_crawled(out, expected)
    assert len(server.requests) == fetched  # the second crawl read every page from the cache
    assert_crawled(tmp_path / "again", expected)
    assert again["errors"] == result["errors"]
    assert_polite(server, "/art/tag/secret/1", "offsite")
    assert result["errors"] == errors(http=1, malformed=1)  # art/tag/missing/1: 404; a wrapper without pre
    paths = server.paths()
    assert paths.count("/art/tag/kitten/1") == 2  # 500, then retried
    for tag, last in [("cat", 3), ("animal", 2), ("kitten", 2), ("bird", 2)]:
        assert f"/art/tag/{tag}/{last}" in paths and f"/art/tag/{tag}/{last + 1}" not in paths


# --- pause and resume -----------------------------------------------------------------------------


@pytest.mark.integration
def test_max_pages_then_resume_fetches_nothing_twice(tmp_path: Path) -> None:
    fixture_dir = FIXTURES / "textart.io"
    with FixtureServer(fixture_dir, textart_routes(flaky=False)) as server:
        first = run_crawl("textart.io", server, tmp_path, max_pages=4)
        assert first["finish_reason"] == "closespider_pagecount"
        stored = len(read_pieces(tmp_path))
        second = run_crawl("textart.io", server, tmp_path, resume=True)
        third = run_crawl("textart.io", server, tmp_path, resume=True)  # nothing left: fetches no page
    assert second["finish_reason"] == third["finish_reason"] == "finished"
    assert first["pieces"] == stored and first["pieces"] + second["pieces"] == 7
    assert third["pages"] == third["pieces"] == 0
    counts = collections.Counter(server.paths())
    assert counts.pop("/robots.txt") == 2  # read once by each run that fetched pages (not by the third)
    assert set(counts.values()) == {1}
    assert_crawled(tmp_path, expected_pieces(fixture_dir, "textart.io", server.base_url))
    shards = 1 + (first["pieces"] > 0)  # each run that stores pieces appends a shard of its own
    assert sorted(p.name for p in tmp_path.glob("pieces-*.jsonl")) == [f"pieces-{i:05d}.jsonl" for i in range(shards)]


def wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """Until `condition()` holds while the crawl runs; its output shows when it exited first."""
    wait_until(condition, what, timeout, 0.05, alive=lambda: proc.poll() is None,
               context=lambda: "" if proc.poll() is None else f"the crawl exited ({proc.returncode}): "
                                                                f"{proc.communicate()}")


@pytest.mark.integration
def test_ctrl_c_then_resume_loses_no_piece(tmp_path: Path) -> None:
    """Ctrl-C while a page is in flight: it finishes, its links are kept, --resume fetches the rest once."""
    fixture_dir = FIXTURES / "asciiart.eu" / "new"
    out = tmp_path / "raw"
    log = out / ".crawl" / "crawl.log"
    with FixtureServer(fixture_dir, EU_NEW, gate="/animals/insects") as server:
        command = [sys.executable, "-m", "asciiray", "scrape", "asciiart.eu", "--out", str(out),
                   "--base-url", server.base_url, "--delay", "0", "--concurrency", "1", "--timeout", "60"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: "/animals/insects" in server.paths(), "the gated page was requested", proc)
            proc.send_signal(signal.SIGINT)
            wait_for(lambda: "shutting down gracefully" in log.read_text(), "a graceful stop began", proc)
            server.opened.set()  # the page in flight now completes
            stdout, stderr = proc.communicate(timeout=90)
        finally:
            proc.kill()
        assert proc.returncode == 130, stderr
        assert "--resume" in stdout
        first = server.paths()
        assert "/animals/insects/bees" not in first  # found by the interrupted page, fetched after resuming
        resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=90)
        assert resumed.returncode == 0, resumed.stderr
        assert "finished" in resumed.stdout
    counts = collections.Counter(server.paths())
    assert counts.pop("/robots.txt") == 2
    assert set(counts.values()) == {1}
    assert server.max_in_flight == 1  # --concurrency 1
    assert_crawled(out, expected_pieces(fixture_dir, "asciiart.eu", server.base_url))


# --- user mistakes --------------------------------------------------------------------------------


def test_cli_rejects_bad_input_in_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["scrape", "example.com", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert cli_main(["scrape", "textart.io", "--out", str(tmp_path), "--base-url", "ftp://mirror"]) == 2
    assert "--base-url" in capsys.readouterr().err
    assert cli_main(["scrape", "textart.io", "--out", "s3://bucket/raw"]) == 2
    assert cli_main(["scrape", "textart.io", "--out", str(tmp_path), "--delay", "-1"]) == 2
    capsys.readouterr()
    (tmp_path / "pieces-00000.jsonl").write_text("")
    assert cli_main(["scrape", "textart.io", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and len(err.strip().splitlines()) == 1
