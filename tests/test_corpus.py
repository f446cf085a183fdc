"""Corpus building, reading, splitting and its CLI, on tiny corpora made here (and on the loopback S3 server)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest

from asciiray import charset, corpus, storage
from asciiray.cli import main
from asciiray.errors import UserError


def art(i: int, height: int = 4, width: int = 12) -> str:
    """A distinct valid piece: a box with the number i inside."""
    inner = str(i).center(width - 2)[: width - 2]
    body = ["|" + (inner if r == (height - 2) // 2 else " " * (width - 2)) + "|" for r in range(height - 2)]
    return "\n".join(["+" + "-" * (width - 2) + "+", *body, "+" + "-" * (width - 2) + "+"])


def build(pieces: list[str], **kw) -> corpus.CorpusBuilder:
    b = corpus.CorpusBuilder(**kw)
    for i, text in enumerate(pieces):
        b.add(text, ["boxes", f"n{i % 3}"], "test", url=f"http://x/{i}", caption=f"box {i}")
    return b


def test_write_then_read_gives_the_same_rows(tmp_path):
    b = build([art(i) for i in range(30)])
    manifest = b.write(str(tmp_path / "c"), rows_per_shard=7)
    assert (manifest["rows"], manifest["shards"]) == (30, 5)
    assert manifest["schema_version"] == corpus.SCHEMA_VERSION and manifest["sources"] == {"test": 30}
    assert corpus.read_manifest(str(tmp_path / "c"))["rows"] == 30
    assert [u.rsplit("/", 1)[1] for u in corpus.shard_uris(str(tmp_path / "c"))] == \
        [f"part-{i:05d}.parquet" for i in range(5)]
    table = corpus.read_table(str(tmp_path / "c"))
    assert table.schema == corpus.SCHEMA
    assert table.to_pylist() == b.table().to_pylist()
    assert table["id"].to_pylist() == sorted(table["id"].to_pylist())
    row = next(r for r in table.to_pylist() if r["caption"] == "box 4")
    assert row["id"] == hashlib.sha256(art(4).encode()).hexdigest()
    assert (row["text"], row["height"], row["width"]) == (art(4), 4, 12)
    assert (row["labels"], row["source"], row["url"]) == (["boxes", "n1"], "test", "http://x/4")
    assert corpus.read_table(str(tmp_path / "c"), columns=["id"]).column_names == ["id"]
    assert len(list(corpus.iter_pieces(str(tmp_path / "c")))) == 30
    assert {r["caption"] for r in corpus.iter_pieces(str(tmp_path / "c"), label="n2")} == \
        {f"box {i}" for i in range(2, 30, 3)}


def test_rebuild_removes_stale_shards(tmp_path):
    out = str(tmp_path / "c")
    build([art(i) for i in range(20)]).write(out, rows_per_shard=5)
    build([art(i) for i in range(6)]).write(out, rows_per_shard=5)
    assert len(corpus.shard_uris(out)) == 2
    assert corpus.read_table(out).num_rows == 6


def test_split_is_stable_as_the_corpus_grows_and_roughly_proportional(tmp_path):
    small, big = build([art(i) for i in range(100)]), build([art(i) for i in range(300)])
    small.write(str(tmp_path / "small"))
    big.write(str(tmp_path / "big"))
    small_ids = corpus.read_table(str(tmp_path / "small"), columns=["id"])["id"]
    split_small = dict(zip(small_ids.to_pylist(), corpus.validation_mask(small_ids, 0.2).tolist()))
    big_ids = corpus.read_table(str(tmp_path / "big"), columns=["id"])["id"]
    split_big = dict(zip(big_ids.to_pylist(), corpus.validation_mask(big_ids, 0.2).tolist()))
    assert all(split_big[k] == v for k, v in split_small.items())

    ids = np.array([hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)], dtype=object)
    for prop in (0.1, 0.3):
        mask = corpus.validation_mask(ids, prop)
        assert mask.dtype == bool and abs(mask.mean() - prop) < 0.03
        assert mask.tolist() == [int(i[:8], 16) / 2**32 < prop for i in ids]
    assert not corpus.validation_mask(ids, 0.0).any() and corpus.validation_mask(ids, 1.0).all()


def test_bad_pieces_are_counted_by_reason_and_never_crash(tmp_path):
    b = corpus.CorpusBuilder()
    cases = {
        "tab": art(1).replace("|", "\t", 1),
        "non_printable": art(2) + "\ncaf\u00e9 au lait",
        "empty": " \n\n   \r\n",
        "invalid_utf8": b"\xff\xfe\x00garbage\x80\x81" * 20,
        "too_small": "+-+\n+-+",
        "too_large": art(3, height=8, width=64) + "\n" + "\n".join(["x" * 60] * 100),
        "over_grid": art(4, height=10, width=70),
    }
    for reason, raw in cases.items():
        assert b.add(raw, ["bad"], "test") == reason
    assert b.add(bytes(range(256)) * 4, [], "test") == "invalid_utf8"
    assert b.add(b"\x00\x01binary" * 10, [], "test") == "non_printable"
    assert b.add(art(5).encode() + b"\n", ["a", "b"], "s1") is None
    assert b.add("\r\n" + art(5).replace("\n", "  \r\n") + "\n\n", ["b", "c"], "s2", url="u2") == "duplicate"
    b.reject("bad_record")
    assert b.accepted == 1 and b.sources == {"s1": 1}
    assert b.rejected == {**{r: 1 for r in cases}, "non_printable": 2, "invalid_utf8": 2, "duplicate": 1,
                          "bad_record": 1}
    (row,) = b.table().to_pylist()
    assert row["labels"] == ["a", "b", "c"] and (row["source"], row["url"]) == ("s1", "")
    manifest = b.write(str(tmp_path / "c"))
    assert manifest["rejected"] == dict(b.rejected) and manifest["rows"] == 1


def test_limits_are_configurable_and_checked():
    b = corpus.CorpusBuilder(corpus.Limits(grid=10, min_lines=2, min_bytes=5))
    assert b.add(art(1, height=3, width=10), [], "t") is None
    assert b.add(art(2, height=3, width=11), [], "t") == "over_grid"
    with pytest.raises(UserError, match="--min-lines"):
        corpus.Limits(min_lines=10, max_lines=5).check()


def test_signatures_are_stripped_from_line_ends():
    sigs = ["jgs", "-hjw-"]
    text = "  /\\_/\\\n ( o.o )  jgs\n  > ^ <\n /_)jgs\n hjgs\n dogs -hjw-\n jgs"
    assert corpus.strip_signatures(text, sigs) == "  /\\_/\\\n ( o.o )\n  > ^ <\n /_)\n hjgs\n dogs\n"
    b = corpus.CorpusBuilder(signatures=sigs)
    b.add(text, [], "t")
    (row,) = b.table().to_pylist()
    assert row["text"] == "  /\\_/\\\n ( o.o )\n  > ^ <\n /_)\n hjgs\n dogs"


def test_builds_are_deterministic(tmp_path):
    pieces = [art(i, height=3 + i % 5, width=10 + i % 30) for i in range(200)]
    manifests = []
    for name in ("a", "b"):
        b = build(pieces + pieces[:10] + ["\t bad"])
        manifests.append(b.write(str(tmp_path / name), rows_per_shard=64))
    for shard in ("part-00000.parquet", "part-00003.parquet"):
        assert (tmp_path / "a" / shard).read_bytes() == (tmp_path / "b" / shard).read_bytes()
    for m in manifests:
        m.pop("built_at")
    assert manifests[0] == manifests[1]


def test_txt_folders_give_labels(tmp_path):
    raw = tmp_path / "raw"
    (raw / "animals" / "cats").mkdir(parents=True)
    (raw / "animals" / "dogs").mkdir(parents=True)
    (raw / "animals" / "cats" / "a.txt").write_text(art(1))
    (raw / "animals" / "dogs" / "b.txt").write_bytes(b"\xef\xbb\xbf" + art(2).replace("\n", "\r\n").encode())
    (raw / "animals" / "dogs" / "bad.txt").write_bytes(art(3).encode() + b"\xff")
    (raw / "top.txt").write_text(art(4))
    (raw / "notes.md").write_text("not art")
    (raw / ".hidden").mkdir()
    (raw / ".hidden" / "x.txt").write_text(art(5))
    b = corpus.CorpusBuilder()
    corpus.ingest(b, str(raw))
    rows = {r["text"]: r for r in b.table().to_pylist()}
    assert set(rows) == {art(1), art(2), art(4)}
    assert rows[art(1)]["labels"] == ["animals", "cats"] and rows[art(2)]["labels"] == ["animals", "dogs"]
    assert rows[art(4)]["labels"] == [] and {r["source"] for r in rows.values()} == {"files"}
    assert b.rejected == {"invalid_utf8": 1}
    single = corpus.CorpusBuilder()
    corpus.ingest(single, str(raw / "top.txt"))
    assert single.accepted == 1


def test_jsonl_with_bad_lines_and_reingest(tmp_path):
    lines = [
        json.dumps({"text": art(1), "labels": ["a", "b"], "source": "asciiart.eu", "url": "http://e/1",
                    "caption": "by X"}),
        "{not json",
        json.dumps({"labels": ["a"]}),
        json.dumps({"text": art(2), "labels": "solo"}),
        json.dumps({"text": art(3), "labels": [1, 2]}),
        json.dumps(["a list"]),
        "",
        json.dumps({"text": art(1), "labels": ["c"], "source": "textart.io"}),
    ]
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "site.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "raw" / "junk.jsonl").write_bytes(b'{"text": "\xff\xfe"}\n')
    b = corpus.CorpusBuilder()
    corpus.ingest(b, str(tmp_path / "raw"))
    assert b.rejected == {"bad_record": 4, "duplicate": 1, "invalid_utf8": 1}
    rows = {r["text"]: r for r in b.table().to_pylist()}
    assert rows[art(1)]["labels"] == ["a", "b", "c"] and rows[art(1)]["caption"] == "by X"
    assert (rows[art(2)]["labels"], rows[art(2)]["source"]) == (["solo"], "unknown")
    b.write(str(tmp_path / "c"))

    again = corpus.CorpusBuilder()
    corpus.ingest(again, str(tmp_path / "c"))
    assert again.table().equals(b.table())
    with pytest.raises(UserError, match="does not exist"):
        corpus.ingest(again, str(tmp_path / "missing"))


def test_readers_explain_a_missing_corpus(tmp_path):
    with pytest.raises(UserError, match="not a corpus .*asciiray corpus build"):
        corpus.read_manifest(str(tmp_path))
    with pytest.raises(UserError, match="not a corpus"):
        corpus.shard_uris(str(tmp_path))
    built = corpus.CorpusBuilder(corpus.Limits(min_bytes=0, min_lines=1))
    built.add("ab", ["x"], "t")
    built.write(str(tmp_path / "c"))
    for shard in (tmp_path / "c").glob("part-*.parquet"):
        shard.unlink()
    with pytest.raises(UserError, match="no part-NNNNN.parquet"):
        corpus.shard_uris(str(tmp_path / "c"))


def test_char_frequencies_and_stats(tmp_path):
    b = corpus.CorpusBuilder(corpus.Limits(min_bytes=0, min_lines=1))
    b.add("ab a\nzz", ["x"], "t")
    b.add("~~~", ["x", "y"], "u")
    b.add("\t", [], "t")
    b.write(str(tmp_path / "c"))
    freq = corpus.char_frequencies(str(tmp_path / "c"))
    assert freq.shape == (charset.NUM_CHARS,) and freq.sum() == 9
    assert (freq[ord("a") - 32], freq[0], freq[ord("z") - 32], freq[ord("~") - 32]) == (2, 1, 2, 3)
    assert corpus.char_frequencies(pa.table({"text": ["  "]}))[0] == 2
    st = corpus.stats(str(tmp_path / "c"))
    assert st["rows"] == 2 and st["sources"] == {"t": 1, "u": 1} and st["labels"] == {"x": 2, "y": 1}
    assert st["height"]["1-8"] == 2 and st["width"]["1-8"] == 2 and st["rejected"] == {"tab": 1}
    assert list(st["chars"])[0] == "~"


def test_s3_round_trip(s3_bucket):
    raw = "\n".join(json.dumps({"text": art(i), "labels": ["s3"]}) for i in range(12))
    storage.write_bytes(f"s3://{s3_bucket}/raw/site/a.jsonl", raw.encode())
    uri = f"s3://{s3_bucket}/corpus"
    b = corpus.CorpusBuilder()
    corpus.ingest(b, f"s3://{s3_bucket}/raw")
    assert b.accepted == 12
    b.write(uri, rows_per_shard=5)
    assert corpus.read_manifest(uri)["rows"] == 12 and len(corpus.shard_uris(uri)) == 3
    assert corpus.read_table(uri).to_pylist() == b.table().to_pylist()
    assert main(["corpus", "build", uri, "--out", f"s3://{s3_bucket}/copy", "--rows-per-shard", "100"]) == 0
    assert corpus.read_table(f"s3://{s3_bucket}/copy").equals(b.table())
    assert corpus.stats(uri)["labels"] == {"s3": 12}


def test_cli_build_stats_show(tmp_path, capsys):
    raw = tmp_path / "raw" / "animals" / "cats"
    raw.mkdir(parents=True)
    for i in range(5):
        (raw / f"{i}.txt").write_text(art(i) + "  jgs")
    (raw / "tab.txt").write_text(art(9).replace("-", "\t"))
    sigs = tmp_path / "sigs.txt"
    sigs.write_text("# artists\njgs\n\n")
    out = str(tmp_path / "c")
    assert main(["corpus", "build", str(tmp_path / "raw"), "--out", out, "--strip-signatures", str(sigs)]) == 0
    printed = capsys.readouterr().out
    assert "5 kept, 1 rejected" in printed and f"corpus {out}: 5 pieces" in printed and "tab" in printed
    assert all("jgs" not in r["text"] for r in corpus.iter_pieces(out))

    assert main(["corpus", "stats", out]) == 0
    printed = capsys.readouterr().out
    assert "pieces: 5" in printed and "1-8" in printed and "'-'" in printed and "tab" in printed

    assert main(["corpus", "show", out, "--label", "cats", "-n", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("== ") == 2 and "[animals, cats]  files  -" in printed and "+----------+" in printed
    assert main(["corpus", "show", out, "--label", "nope"]) == 0
    assert "no pieces with label 'nope'" in capsys.readouterr().out


def test_cli_user_mistakes_are_one_line(tmp_path, capsys):
    assert main(["corpus", "build", str(tmp_path / "missing"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("asciiray: error: ") and "missing does not exist" in err[-1]
    assert main(["corpus", "stats", str(tmp_path)]) == 2
    assert "not a corpus" in capsys.readouterr().err
    assert main(["corpus", "build", str(tmp_path), "--out", str(tmp_path / "c"), "--strip-signatures",
                 str(tmp_path / "nosigs.txt")]) == 2
    assert "nosigs.txt does not exist" in capsys.readouterr().err
