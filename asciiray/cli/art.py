"""Use a trained model: `reconstruct`, `sample`, `interpolate`, `explore`, `embed`, `export`.

The work is done by asciiray.inference, asciiray.pictures, asciiray.projector and asciiray.export;
these functions parse, print and write what was asked for, once everything it needs is computed.
"""

from __future__ import annotations

import argparse
import os
import random
import textwrap

from asciiray import pretrained
from asciiray.errors import UserError

CHECKPOINT_HELP = ("a run directory (its latest checkpoint), a checkpoint directory or an exported model, local or "
                   "s3://; or `pretrained`, the model shipped with asciiray (the default)")
PIECE_HELP = "a text file, or the id (at least its first 6 hex digits) of a piece of the model's corpus"
DEFAULT = " (default: %(default)s)"
BLANK = "(blank: every cell a space)"


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", default="pretrained", help=CHECKPOINT_HELP)
    common.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present)")

    def command(name: str, func, help: str, description: str, examples: str) -> argparse.ArgumentParser:
        paragraphs = "\n\n".join(textwrap.fill(part, 79) for part in description.split("\n\n"))
        p = sub.add_parser(name, parents=[common], help=help, description=paragraphs,
                           epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    r = command("reconstruct", run_reconstruct, "print input | reconstruction from a VAE checkpoint",
                "Print input | reconstruction for text files, or for validation pieces of the corpus the model "
                "was trained on (with their ids), each pair cropped to its ink.",
                "  asciiray reconstruct runs/my-run -n 5 --png pairs.png\n"
                "  asciiray reconstruct s3://bucket/runs/my-run my_piece.txt\n")
    r.add_argument("files", nargs="*", help="text files, one piece each (default: validation pieces)")
    r.add_argument("-n", type=int, default=3, help="validation pieces to show when no file is given" + DEFAULT)
    r.add_argument("--png", help="also draw the pairs into one PNG (local path or s3://)")

    s = command("sample", run_sample, "draw new pieces from the prior",
                "Decode N latents drawn from N(0, t^2 I) into new pieces and print them, cropped to their ink. "
                "The same --seed draws the same pieces again.",
                "  asciiray sample runs/my-run -n 8 --temperature 0.8 --png samples.png\n"
                "  asciiray sample exported-model -n 100 --seed 1 --out samples/\n")
    s.add_argument("-n", type=int, default=8, help="pieces to draw" + DEFAULT)
    s.add_argument("--temperature", "-t", type=float, default=1.0, help="t, the prior's standard deviation" + DEFAULT)
    s.add_argument("--seed", type=int, help="random seed (default: a fresh one, printed)")
    s.add_argument("--png", help="draw the pieces into one contact sheet PNG (local path or s3://)")
    s.add_argument("--out", metavar="DIR", help="write each piece to DIR/sample-NNN.txt (local path or s3://)")

    i = command("interpolate", run_interpolate, "morph one piece into another through latent space",
                "Encode pieces A and B, walk from one latent to the other in K frames and print each frame; "
                "the first and last frames are the reconstructions of A and B.",
                "  asciiray interpolate runs/my-run cat.txt dog.txt --steps 12 --gif morph.gif\n"
                "  asciiray interpolate runs/my-run 3fa2b1c09d7e 8c01de55aa02 --slerp --png strip.png\n")
    i.add_argument("a", metavar="A", help=PIECE_HELP)
    i.add_argument("b", metavar="B", help=PIECE_HELP)
    i.add_argument("--steps", "-k", type=int, default=8, help="frames, both ends included" + DEFAULT)
    i.add_argument("--slerp", action="store_true", help="walk the great circle instead of the straight line")
    i.add_argument("--gif", help="write the frames as an animated GIF (local path or s3://)")
    i.add_argument("--png", help="write the frames as one strip PNG (local path or s3://)")
    i.add_argument("--frame-ms", type=int, default=150, help="milliseconds a GIF frame shows, the ends 4x" + DEFAULT)

    e = command("explore", run_explore, "wander the latent space in a full-screen terminal",
                "A full-screen terminal explorer: it glides between random encoded pieces of the model's corpus "
                "(or of --files), decoding one frame at a time, and holds at each.\n\nkeys: space pause/resume, "
                "n next random piece, p a prior sample instead, +/- temperature of prior samples, . one frame on "
                "(pauses), s save the frame to a .txt, q quit.",
                "  asciiray explore runs/my-run --smooth --slerp\n"
                "  asciiray explore exported-model --files a.txt b.txt c.txt --frame-rate 20 --hold 3\n")
    e.add_argument("--files", nargs="+", metavar="PIECE", help=f"pieces to visit instead of the corpus: {PIECE_HELP}")
    e.add_argument("--frame-rate", type=float, default=12.0, help="frames per second" + DEFAULT)
    e.add_argument("--steps", type=int, default=24, help="frames from one piece to the next" + DEFAULT)
    e.add_argument("--hold", type=float, default=1.5, help="seconds to stay at each piece" + DEFAULT)
    e.add_argument("--smooth", action="store_true", help="ease in and out of each piece instead of a constant speed")
    e.add_argument("--slerp", action="store_true", help="glide along great circles instead of straight lines")
    e.add_argument("--temperature", "-t", type=float, default=1.0,
                   help="standard deviation of prior samples (keys +/-)" + DEFAULT)
    e.add_argument("--seed", type=int, help="random seed of the pieces and prior samples visited")
    e.add_argument("--save-dir", default=".", help="where s saves frames as explore-NNN.txt" + DEFAULT)

    m = command("embed", run_embed, "show the latent space in TensorBoard's projector",
                "Encode validation pieces of the model's corpus and write their mu, labels and pictures for "
                "TensorBoard's projector (`asciiray train` does this at the end of a run).",
                "  asciiray embed runs/my-run && tensorboard --logdir runs/my-run/tensorboard   # Projector tab\n"
                "  asciiray embed exported-model --logdir tb/ -n 2000\n")
    m.add_argument("--logdir", help="TensorBoard directory, local or s3:// (default: the run's tensorboard/)")
    m.add_argument("-n", type=int, default=1000, help="validation pieces to embed, in id order" + DEFAULT)

    x = command("export", run_export, "write a self-contained model directory",
                "Write model.safetensors, config.json (model config, grid, charset, training metadata) and a "
                "README.md model card into OUT, a new directory. Every command here, and the inference API, "
                "loads it with no run, Ray or corpus around it.",
                "  asciiray export runs/my-run models/cats\n"
                "  asciiray export s3://bucket/runs/my-run s3://bucket/models/cats\n")
    x.add_argument("out", metavar="OUT", help="the directory to create, local or s3://")
    x.add_argument("--fp16", action="store_true", help="store the weights in half precision (half the size; "
                                                        "loading casts them back to fp32)")


def load(args: argparse.Namespace):
    from asciiray.inference import TrainedVAE

    return TrainedVAE.load(args.checkpoint, args.device)


def reconstruction_pairs(vae, files: list[str], n: int, png: str | None = None) -> list[tuple[str, str]]:
    """(name, input | reconstruction text) of files, or of the first n validation pieces; optionally a PNG."""
    from asciiray import charset
    from asciiray.pictures import pairs_picture, save_picture

    if files:
        named = [vae.piece(f) for f in files]
    else:
        named = [(f"{p.id[:12]} [{'/'.join(p.labels)}]", p.text) for p in vae.corpus_pieces()[:n]]
    if not named:
        raise UserError(f"the corpus {vae.meta.get('corpus')} has no validation piece that fits the model's grid: "
                        f"pass text files")
    texts = [text for _, text in named]
    inputs, outputs = vae.codes(texts), vae.reconstruct(texts).codes
    if png:
        save_picture(png, pairs_picture(inputs, outputs, [name for name, _ in named]))
    return [(name, charset.side_by_side(*charset.crop_texts(pair)))
            for (name, _), pair in zip(named, zip(inputs, outputs))]


def print_pairs(pairs: list[tuple[str, str]]) -> None:
    print("\ninput | reconstruction")
    for name, pair in pairs:
        print(f"\n== {name}")
        print(pair)


def check_outputs(args: argparse.Namespace, files: tuple[str, ...] = (), dirs: tuple[str, ...] = ()) -> None:
    """Refuse, before a model is loaded, the output flags (by attribute name) that cannot be written."""
    from asciiray import storage

    for names, file in ((files, True), (dirs, False)):
        for name in names:
            if getattr(args, name):
                storage.check_writable(getattr(args, name), f"--{name.replace('_', '-')}", file=file)


def run_reconstruct(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UserError(f"-n {args.n}: show at least one piece")
    check_outputs(args, files=("png",))
    if os.path.isfile(args.checkpoint):  # `reconstruct piece.txt`: a piece for the shipped model
        args.files, args.checkpoint = [args.checkpoint, *args.files], pretrained.NAME
    print_pairs(reconstruction_pairs(load(args), args.files, args.n, args.png))
    print_written([args.png] if args.png else [])
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from asciiray import storage
    from asciiray.inference import check_temperature
    from asciiray.pictures import save_picture, sheet_picture

    check_temperature(args.temperature)
    check_outputs(args, files=("png",), dirs=("out",))
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    pieces = load(args).sample(args.n, args.temperature, seed)
    picture = sheet_picture(pieces.codes, [f"sample {i + 1}" for i in range(args.n)]) if args.png else None
    print(f"{args.n} samples, temperature {args.temperature:g}, seed {seed}")
    for i, text in enumerate(pieces.texts):
        print(f"\n== sample {i + 1}/{args.n}")
        print(text or BLANK)
    if args.out:
        for i, text in enumerate(pieces.texts):
            storage.write_bytes(storage.join(args.out, f"sample-{i + 1:03d}.txt"), (text + "\n").encode())
    if picture is not None:
        save_picture(args.png, picture)
    print_written([f"{args.n} pieces in {args.out}"] * bool(args.out) + [args.png] * bool(args.png))
    return 0


def print_written(paths: list[str]) -> None:
    """What a command wrote, after a blank line."""
    if paths:
        print("\n" + "\n".join(f"wrote {p}" for p in paths))


def run_interpolate(args: argparse.Namespace) -> int:
    from asciiray.pictures import frame_pictures, save_picture, strip_picture

    if args.frame_ms < 1:
        raise UserError(f"--frame-ms {args.frame_ms}: a frame shows for at least 1 ms")
    check_outputs(args, files=("gif", "png"))
    vae = load(args)
    (name_a, a), (name_b, b) = vae.piece(args.a), vae.piece(args.b)
    frames = vae.interpolate(a, b, args.steps, "slerp" if args.slerp else "linear")
    k = args.steps
    labels = [f"{i + 1}/{k}" + (f" {name_a}" if i == 0 else f" {name_b}" if i == k - 1 else "") for i in range(k)]
    pictures = frame_pictures(frames.codes, labels)
    for label, text in zip(labels, frames.aligned_texts):
        print(f"\n== frame {label}")
        print(text)
    if args.gif:
        save_picture(args.gif, pictures, args.frame_ms)
    if args.png:
        save_picture(args.png, strip_picture(pictures))
    print_written([p for p in (args.gif, args.png) if p])
    return 0


def run_explore(args: argparse.Namespace) -> int:
    import sys

    from asciiray.cli.explorer import POOL, Explorer, Settings
    from asciiray.inference import check_temperature

    settings = Settings(frame_rate=args.frame_rate, steps=args.steps, hold=args.hold, smooth=args.smooth,
                        path="slerp" if args.slerp else "linear", temperature=args.temperature,
                        seed=args.seed if args.seed is not None else random.randrange(2**31), save_dir=args.save_dir)
    settings.check()
    check_temperature(args.temperature)
    check_outputs(args, dirs=("save_dir",))
    vae = load(args)
    if args.files:
        named = [vae.piece(f) for f in args.files]
    else:
        named = [(p.id[:12], p.text) for p in vae.random_corpus_pieces(POOL, random.Random(settings.seed))]
    if not named:
        raise UserError(f"the corpus {vae.meta.get('corpus')} has no piece that fits the model's grid: pass --files")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError("explore draws on a terminal: run it in one (stdin or stdout is not a terminal)")
    return Explorer(vae, named, settings).run()


def run_embed(args: argparse.Namespace) -> int:
    from asciiray.projector import default_logdir, write_projector

    check_outputs(args, dirs=("logdir",))
    vae = load(args)
    logdir = args.logdir or default_logdir(vae)
    count = write_projector(vae, logdir, args.n)
    print(f"embedded {count} validation pieces in {logdir}: tensorboard --logdir {logdir}, then the Projector tab")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from asciiray import storage
    from asciiray.export import export

    storage.check_writable(args.out, "OUT")
    vae = load(args)
    export(vae, args.out, args.fp16)
    print(f"exported {vae.uri} to {args.out}")
    return 0
