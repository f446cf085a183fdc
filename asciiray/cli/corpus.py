"""`asciiray corpus build | stats | show`: clean raw pieces into a corpus and look inside one."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  asciiray corpus build scraped/ art-folders/ --out ./corpus
  asciiray corpus build scraped/*.jsonl --out s3://bucket/corpus --strip-signatures signatures.txt
  asciiray corpus stats ./corpus
  asciiray corpus show s3://bucket/corpus --label cats -n 3
"""


def register(sub: argparse._SubParsersAction) -> None:
    from asciiray.corpus import Limits

    p = sub.add_parser("corpus", help="build, inspect and show corpora", epilog=EXAMPLES,
                       description="Clean raw ASCII-art pieces into a Parquet corpus (local or s3://) and "
                                   "inspect corpora.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)

    b = cmds.add_parser("build", help="clean raw pieces into Parquet shards",
                        description="Clean, deduplicate and shard raw pieces. RAW is a folder of .txt files in "
                                    "category folders, a .jsonl file or folder of them (as the spiders write), "
                                    "or an existing corpus. Rejected pieces are counted by reason.")
    b.add_argument("raw", nargs="+", metavar="RAW", help="raw inputs (local paths or s3:// URIs)")
    b.add_argument("--out", required=True, help="output directory or s3:// prefix (its old shards are replaced)")
    defaults = Limits()
    b.add_argument("--grid", type=positive_int, default=defaults.grid, help="grid side; larger pieces are rejected "
                   "(default: %(default)s)")
    b.add_argument("--min-lines", type=int, default=defaults.min_lines, help="(default: %(default)s)")
    b.add_argument("--min-bytes", type=int, default=defaults.min_bytes, help="(default: %(default)s)")
    b.add_argument("--max-lines", type=int, default=defaults.max_lines, help="(default: %(default)s)")
    b.add_argument("--max-bytes", type=int, default=defaults.max_bytes, help="(default: %(default)s)")
    b.add_argument("--strip-signatures", metavar="FILE",
                   help="file of artists' signatures, one per line, removed from line ends ('#' lines ignored)")
    b.add_argument("--rows-per-shard", type=positive_int, default=50_000, help="(default: %(default)s)")
    b.set_defaults(func=run_build)

    s = cmds.add_parser("stats", help="counts, sizes, characters and rejections of a corpus")
    s.add_argument("path", nargs="?", help="corpus directory or s3:// prefix (default: the embedded corpus)")
    s.add_argument("--top", type=int, default=20, help="characters to list (default: %(default)s)")
    s.set_defaults(func=run_stats)

    w = cmds.add_parser("show", help="print pieces of a corpus")
    w.add_argument("path", nargs="?", help="corpus directory or s3:// prefix (default: the embedded corpus)")
    w.add_argument("--label", help="only pieces with this label")
    w.add_argument("-n", type=int, default=5, help="pieces to print (default: %(default)s)")
    w.set_defaults(func=run_show)


def positive_int(value: str) -> int:
    """argparse type: an integer of at least 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return number


def read_signatures(uri: str) -> list[str]:
    """Signatures from a text file: one per line, blank and '#' lines skipped."""
    from asciiray import storage
    from asciiray.errors import UserError

    try:
        text = storage.read_bytes(uri).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"--strip-signatures {uri}: not UTF-8 text; pass a text file, one signature a line") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def run_build(args: argparse.Namespace) -> int:
    from asciiray import corpus, storage

    storage.check_writable(args.out, "--out")
    limits = corpus.Limits(grid=args.grid, min_lines=args.min_lines, min_bytes=args.min_bytes,
                           max_lines=args.max_lines, max_bytes=args.max_bytes)
    signatures = read_signatures(args.strip_signatures) if args.strip_signatures else []
    builder = corpus.CorpusBuilder(limits, signatures)
    for raw in args.raw:
        kept, rejected = builder.accepted, sum(builder.rejected.values())
        corpus.ingest(builder, raw)
        print(f"{raw}: {builder.accepted - kept} kept, {sum(builder.rejected.values()) - rejected} rejected",
              flush=True)
    manifest = builder.write(args.out, args.rows_per_shard)
    print(f"\ncorpus {args.out}: {manifest['rows']} pieces in {manifest['shards']} shard(s)")
    print("sources: " + (", ".join(f"{k} {v}" for k, v in manifest["sources"].items()) or "none"))
    print(f"rejected: {sum(manifest['rejected'].values())}")
    for reason, count in sorted(manifest["rejected"].items(), key=lambda kv: -kv[1]):
        print(f"  {reason:<16}{count:>10}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from asciiray import corpus
    from asciiray.embedded import DEFAULT_CORPUS

    st = corpus.stats(args.path or DEFAULT_CORPUS)
    print(f"corpus {st['uri']}")
    print(f"pieces: {st['rows']} in {st['shards']} shard(s), built {st['built_at']}")
    print("sources: " + ", ".join(f"{k} {v}" for k, v in st["sources"].items()))
    top_labels = list(st["labels"].items())[:10]
    print(f"labels: {len(st['labels'])} distinct; top: " + ", ".join(f"{k} {v}" for k, v in top_labels))
    print(f"{'size':<10}{'height':>10}{'width':>10}")
    for bucket in st["height"]:
        print(f"{bucket:<10}{st['height'][bucket]:>10}{st['width'][bucket]:>10}")
    total = sum(st["chars"].values()) or 1
    print(f"top characters (of {total}):")
    for ch, count in list(st["chars"].items())[:args.top]:
        print(f"  {ch!r:<6}{count:>12}  {100 * count / total:6.2f}%")
    print(f"rejected at build: {sum(st['rejected'].values())}")
    for reason, count in sorted(st["rejected"].items(), key=lambda kv: -kv[1]):
        print(f"  {reason:<16}{count:>10}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from asciiray import corpus
    from asciiray.embedded import DEFAULT_CORPUS

    uri = args.path or DEFAULT_CORPUS
    shown = 0
    for row in corpus.iter_pieces(uri, args.label):
        if shown >= args.n:
            break
        print(f"== {row['id'][:12]}  [{', '.join(row['labels'])}]  {row['source']}  {row['url'] or '-'}")
        print(row["text"])
        print()
        shown += 1
    if shown == 0:
        print(f"no pieces{f' with label {args.label!r}' if args.label else ''} in {uri}")
    return 0
