"""Build benchmarks/data/realart: real multi-line pictures from Debian packages, plus hand-made pieces.

A one-off, run by hand; its output is committed, and nothing reads the
registries at run time. It fetches with apt (`apt-get download` for binary
packages, `apt-get source --download-only` with a private source list for
sl, whose trains live only in its source), runs the packages' own tools where
they draw the pictures (boxes, screenfetch, linux_logo) or parses their data
(cowsay's .cow files through Perl, neofetch's logos, sl's header), adds
pictures made from the public-domain photo matplotlib ships and hand-made
pieces of very different density and size, then keeps each piece that is
printable ASCII and fits the 64 x 64 grid (tabs expanded, colour codes
removed), one .txt file per piece in category folders:

    .venv/bin/python benchmarks/build_realart.py --work /tmp/realart-src
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from asciiray import charset

OUT = Path(__file__).parent / "data" / "realart"
PACKAGES = ["cowsay", "boxes", "libpcre2-32-0", "neofetch", "screenfetch", "linuxlogo", "fortunes"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]")
COW_PL = r"""
our ($eyes, $tongue, $thoughts) = @ARGV[1..3];
our $the_cow;
do $ARGV[0] or die "$ARGV[0]: $@ $!";
print $the_cow;
"""
COW_MODES = {"default": ("oo", "  "), "borg": ("==", "  "), "dead": ("xx", "U "), "greedy": ("$$", "  "),
             "paranoid": ("@@", "  "), "stoned": ("**", "U "), "tired": ("--", "  "), "wired": ("OO", "  "),
             "youthful": ("..", "  ")}
MESSAGES = ["Moo", "Hello, world!", "ASCII art\nis fun", "Ray trains\nthe VAE\nall night", "Hi"]


def run(cmd: list[str], **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, errors="replace", **kw).stdout


def fetch(work: Path) -> Path:
    """Debian packages unpacked under work/x/<package>, sl's source under work/src."""
    debs, x = work / "debs", work / "x"
    debs.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "download", *PACKAGES], cwd=debs)
    for deb in debs.glob("*.deb"):
        target = x / deb.name.split("_")[0]
        if not target.exists():
            target.mkdir(parents=True)
            run(["dpkg-deb", "-x", str(deb), str(target)])
    apt = work / "apt"
    (apt / "parts").mkdir(parents=True, exist_ok=True)
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "parts" / "src.sources").write_text(
        "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    opts = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={apt / 'parts'}",
            "-o", f"Dir::State::Lists={apt / 'lists'}"]
    src = work / "src"
    src.mkdir(exist_ok=True)
    run(["apt-get", *opts, "update"])
    run(["apt-get", *opts, "source", "--download-only", "sl"], cwd=src)
    for tar in src.glob("sl_*.orig.tar.gz"):
        run(["tar", "xzf", str(tar)], cwd=src)
    return x


def bubble(message: str, think: bool) -> str:
    """A plain speech (or thought) bubble, as cowsay draws one."""
    lines = message.split("\n")
    w = max(map(len, lines))
    out = [" " + "_" * (w + 2)]
    if think:
        out += [f"( {line.ljust(w)} )" for line in lines]
    elif len(lines) == 1:
        out.append(f"< {lines[0].ljust(w)} >")
    else:
        for i, line in enumerate(lines):
            left, right = ("/", "\\") if i == 0 else ("\\", "/") if i == len(lines) - 1 else ("|", "|")
            out.append(f"{left} {line.ljust(w)} {right}")
    out.append(" " + "-" * (w + 2))
    return "\n".join(out)


def cows(x: Path, work: Path) -> Iterator[tuple[str, str]]:
    script = work / "cow.pl"
    script.write_text(COW_PL)
    rng = random.Random(0)
    for cow in sorted((x / "cowsay/usr/share/cowsay/cows").glob("*.cow")):
        modes = ["default", *rng.sample(sorted(set(COW_MODES) - {"default"}), 2)]
        for i, mode in enumerate(modes):
            think = i == 2
            eyes, tongue = COW_MODES[mode]
            body = run(["perl", str(script), str(cow), eyes, tongue, "o" if think else "\\"])
            yield f"{cow.stem}-{mode}", bubble(rng.choice(MESSAGES), think) + "\n" + body
        yield f"{cow.stem}-alone", run(["perl", str(script), str(cow), "oo", "  ", " "])


def boxes(x: Path) -> Iterator[tuple[str, str]]:
    exe, conf = x / "boxes/usr/bin/boxes", x / "boxes/etc/boxes/boxes-config"
    env = {**os.environ, "LD_LIBRARY_PATH": str(x / "libpcre2-32-0/usr/lib/x86_64-linux-gnu")}
    listing = run([str(exe), "-f", str(conf), "-l", "-q", "(all)"], env=env).split()
    texts = ["Hi", "Hello, world!", "Boxes hold\nsigns, notes\nand comments."]
    for design in listing:
        for i, text in enumerate(texts):
            try:
                yield f"{design}-{i}", run([str(exe), "-f", str(conf), "-d", design], input=text, env=env)
            except subprocess.CalledProcessError:
                continue


def neofetch(x: Path) -> Iterator[tuple[str, str]]:
    src = (x / "neofetch/usr/bin/neofetch").read_text().split("\n")
    for i, line in enumerate(src):
        if "read -rd '' ascii_data <<'EOF'" not in line:
            continue
        label = next((m.group(1) for j in range(i, i - 15, -1)
                      if (m := re.match(r'^\s+"([^"]*)"[^)]*\)\s*$', src[j]))), f"logo{i}")
        end = src.index("EOF", i)
        data = re.sub(r"\$\{c\d\}", "", "\n".join(src[i + 1:end]))
        yield slug(label), run(["bash", "-c", 'printf "%b" "$1"', "-", data])


def screenfetch(x: Path) -> Iterator[tuple[str, str]]:
    path = x / "screenfetch/usr/bin/screenfetch"
    src = path.read_text().split("\n")
    for i, line in enumerate(src):
        if "fulloutput=(" not in line:
            continue
        name = next((m.group(1) for j in range(i, i - 30, -1) if (m := re.match(r'^\t\t"([^"]+)"(\||\))', src[j]))),
                    None)
        if name:
            try:
                yield slug(name), run(["bash", str(path), "-N", "-L", "-A", name], timeout=60)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                continue


def linuxlogo(x: Path) -> Iterator[tuple[str, str]]:
    exe = x / "linuxlogo/usr/bin/linux_logo"
    names = re.findall(r"^\s+\d+\s+\w+\s+Yes\s+(\S+)", run([str(exe), "-L", "list"]), re.M)
    for name in names:
        out = subprocess.run([str(exe), "-a", "-l", "-L", name, "-F", "#"], capture_output=True, text=True,
                             errors="replace").stdout
        yield slug(name), out


def sl(work: Path) -> Iterator[tuple[str, str]]:
    """The trains of sl.h: each locomotive in each wheel pattern, and the small train with its cars."""
    header = next((work / "src").glob("sl-*/sl.h")).read_text()
    strings = {m.group(1): bytes(m.group(2), "ascii").decode("unicode_escape")
               for m in re.finditer(r'#define\s+(\w+)\s+"((?:[^"\\]|\\.)*)"', header)}

    def rows(prefix: str) -> list[str]:
        return [v for k, v in strings.items() if re.fullmatch(prefix + r"\d+", k)]

    d51, c51 = rows("D51STR"), rows("C51STR")
    for p in range(1, 7):
        yield f"d51-{p}", "\n".join(d51 + rows(f"D51WHL{p}"))
        yield f"c51-{p}", "\n".join(c51 + rows(f"C51WH{p}"))
        loco = rows("LOGO") + rows(f"LWHL{p}")
        yield f"logo-{p}", "\n".join(loco)
        yield f"logo-train-{p}", "\n".join(a + b + c for a, b, c in zip(loco, rows("LCOAL"), rows("LCAR")))
    yield "coal", "\n".join(rows("COAL"))


def fortunes(x: Path) -> Iterator[tuple[str, str]]:
    text = (x / "fortunes/usr/share/games/fortunes/ascii-art").read_text(errors="replace")
    for i, piece in enumerate(text.split("\n%\n")):
        yield f"ascii-art-{i:02d}", piece


RAMPS = [" .:-=+*#%@", " .'`^\",:;Il!i><~+_-?][}{1)(|/tfjrxnuvczXYUJCLQ0OZmwqpdbkhao*#MW&8%B@$", " .oO@", " -+#"]


def photos() -> Iterator[tuple[str, str]]:
    """Grace Hopper's portrait (public domain, shipped by matplotlib) at many sizes, crops and ramps."""
    from PIL import Image
    import matplotlib

    img = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("L")
    crops = {"full": (0, 0, 1, 1), "face": (0.25, 0.1, 0.75, 0.6), "upper": (0.1, 0.0, 0.9, 0.7)}
    for (cname, (a, b, c, d)), width, (r, ramp), invert in (
            (crop, width, ramp, inv) for crop in crops.items() for width in (24, 40, 60)
            for ramp in enumerate(RAMPS) for inv in (False, True)):
        w, h = img.size
        part = img.crop((int(a * w), int(b * h), int(c * w), int(d * h)))
        height = max(3, min(64, round(width * part.size[1] / part.size[0] * 0.5)))
        pixels = np.asarray(part.resize((width, height)), dtype=np.float64) / 255.0
        if invert:
            pixels = 1.0 - pixels
        index = np.minimum((pixels * len(ramp)).astype(int), len(ramp) - 1)
        yield f"hopper-{cname}-{width}-r{r}{'-inv' if invert else ''}", "\n".join(
            "".join(ramp[i] for i in row) for row in index)


def handmade() -> Iterator[tuple[str, str]]:
    """Pieces of very different density and size: tiny, sparse, line drawings, shaded blobs, full frames."""
    rng = random.Random(1)
    for n in range(12):  # sparse star fields
        w, h, stars = rng.randint(20, 64), rng.randint(6, 40), rng.randint(8, 60)
        g = [[" "] * w for _ in range(h)]
        for _ in range(stars):
            g[rng.randrange(h)][rng.randrange(w)] = rng.choice("..*+'o")
        yield f"stars-{n}", "\n".join("".join(r) for r in g)
    for n in range(10):  # shaded discs and rings
        r0 = rng.randint(3, 30)
        ramp = rng.choice(RAMPS)
        ring = n % 2 == 1
        rows = []
        for y in range(-r0 // 2, r0 // 2 + 1):
            row = ""
            for xx in range(-r0, r0 + 1):
                d = math.hypot(xx / r0, 2 * y / r0)
                v = (1 - abs(d - 0.7) / 0.3) if ring else 1 - d
                row += ramp[min(len(ramp) - 1, int(max(0.0, v) * len(ramp)))] if d <= 1 else " "
            rows.append(row)
        yield f"{'ring' if ring else 'disc'}-{n}", "\n".join(rows)
    for n in range(8):  # sine waves
        w, h = rng.randint(30, 64), rng.randint(5, 20)
        g = [[" "] * w for _ in range(h)]
        f, ch = rng.uniform(0.1, 0.5), rng.choice("*o#~.")
        for xx in range(w):
            g[round((h - 1) / 2 * (1 + math.sin(f * xx)))][xx] = ch
        yield f"wave-{n}", "\n".join("".join(r) for r in g)
    for n in range(8):  # checkerboards and hatching, the densest pieces
        w, h, k = rng.randint(8, 64), rng.randint(4, 64), rng.randint(1, 4)
        a, b = rng.choice(["# ", "#.", "/\\", "XO", "+-", "@ "])
        yield f"checker-{n}", "\n".join("".join(a if (xx // k + y // k) % 2 else b for xx in range(w))
                                        for y in range(h))
    for n in range(8):  # framed boxes of different sizes, some filling the whole grid
        w, h = rng.choice([(64, 64), (10, 3), (30, 12), (50, 40), (5, 5), (64, 8), (20, 60), (40, 20)])
        label = rng.choice(["", "note", "asciiray", "TODO: draw", "x"])
        rows = ["+" + "-" * (w - 2) + "+"] + ["|" + " " * (w - 2) + "|" for _ in range(h - 2)] + [
            "+" + "-" * (w - 2) + "+"]
        if label and h > 2 and len(label) <= w - 2:
            mid = rows[h // 2]
            start = (w - len(label)) // 2
            rows[h // 2] = mid[:start] + label + mid[start + len(label):]
        yield f"frame-{n}", "\n".join(rows)
    for n in range(6):  # pyramids and triangles
        h, ch = rng.randint(3, 30), rng.choice("*#^A")
        yield f"pyramid-{n}", "\n".join(" " * (h - i - 1) + ch * (2 * i + 1) for i in range(h))
    for n in range(6):  # tables
        cols, nrows, cw = rng.randint(2, 5), rng.randint(2, 10), rng.randint(4, 10)
        sep = "+" + "+".join("-" * cw for _ in range(cols)) + "+"
        body = [sep] + [row for i in range(nrows) for row in (
            "|" + "|".join(f" {rng.choice(['id', 'name', 'x', '42', '3.14', 'ok', 'a b'])}".ljust(cw)[:cw]
                           for _ in range(cols)) + "|", sep if i == 0 or i == nrows - 1 else None) if row]
        yield f"table-{n}", "\n".join(body)
    small = {
        "smiley": " .-. \n( o o)\n ( - )\n  '-' ",
        "house": "    /\\\n   /  \\\n  /____\\\n  | [] |\n  |_  _|\n  |_||_|",
        "tree": "   *\n  /_\\\n /___\\\n/_____\\\n  | |",
        "fish": " ><(((('>\n\n   ><>\n      <><",
        "cat": " /\\_/\\\n( o.o )\n > ^ <",
        "arrow": "   ^\n  /|\\\n / | \\\n   |\n   |",
        "heart": " ** **\n*******\n *****\n  ***\n   *",
        "rocket": "   /\\\n  /  \\\n |    |\n | () |\n |    |\n/|/\\/\\|\\\n  ''''",
        "key": "  ___\n /   \\______\n|  O  ______|\n \\___/ |_| |_|",
        "cup": "   ( (\n    ) )\n ........\n |      |]\n \\      /\n  `----'",
    }
    for name, piece in small.items():  # small pictures, each also drawn at a larger scale
        yield name, piece
        lines = piece.split("\n")
        yield f"{name}-x2", "\n".join(line2 for line in lines for line2 in ("".join(c * 2 for c in line),) * 2)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "piece"


def clean(raw: str) -> str | None:
    """The normalised piece, or None when it is not printable ASCII, has under 3 lines or does not fit 64 x 64."""
    text = charset.normalize(ANSI.sub("", raw).expandtabs(8))
    try:
        charset.validate(text)
    except ValueError:
        return None
    height, width = charset.shape(text)
    return text if 3 <= height <= charset.DEFAULT_GRID and width <= charset.DEFAULT_GRID else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the packages")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    x = fetch(args.work)
    groups = {"cowsay": cows(x, args.work), "boxes": boxes(x), "neofetch": neofetch(x),
              "screenfetch": screenfetch(x), "linuxlogo": linuxlogo(x), "sl": sl(args.work),
              "fortunes": fortunes(x), "photo": photos(), "handmade": handmade()}
    for old in args.out.glob("*/*.txt"):
        old.unlink()
    seen: set[str] = set()
    for group, pieces in groups.items():
        kept = rejected = 0
        for name, raw in pieces:
            text = clean(raw)
            key = hashlib.sha256(text.encode()).hexdigest() if text else ""
            if text is None or key in seen:
                rejected += 1
                continue
            seen.add(key)
            path = args.out / group / f"{name}.txt"
            while path.exists():  # two logos whose names slug alike
                path = path.with_name(f"{path.stem}-2.txt")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")
            kept += 1
        print(f"{group}: kept {kept}, rejected {rejected} (not printable ASCII, under 3 lines, over 64 x 64, "
              f"or a duplicate)")
    print(f"total: {len(seen)} pieces in {args.out}")


if __name__ == "__main__":
    main()
