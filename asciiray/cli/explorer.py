"""The full-screen latent-space explorer behind `asciiray explore` (curses, from the standard library).

The walk itself is asciiray.explore.Tour; this module times it, decodes one latent per frame,
draws the frame in the middle of the terminal with a status line under it, and answers keys.
A frame is placed by its grid, so pieces do not jump about as they morph; when its ink does not
fit the terminal, the screen says so until the terminal grows (or the frame shrinks).
"""

from __future__ import annotations

import curses
import random
import textwrap
import time
from dataclasses import dataclass

import numpy as np

from asciiray import charset, storage
from asciiray.errors import UserError
from asciiray.explore import Stop, Tour
from asciiray.inference import TrainedVAE

HELP = "space pause  n next  p prior  +/- temp  . step  s save  q quit"
TEMPERATURE_STEP = 0.1
# Corpus pieces encoded at the start, to glide between; seconds a note (e.g. "saved ...") stays up.
POOL = 64
NOTE_S = 4.0


@dataclass
class Settings:
    frame_rate: float
    steps: int
    hold: float
    smooth: bool
    path: str
    temperature: float
    seed: int
    save_dir: str

    def check(self) -> None:
        if not self.frame_rate > 0:
            raise UserError(f"--frame-rate {self.frame_rate}: use a positive number of frames per second")
        if self.steps < 1:
            raise UserError(f"--steps {self.steps}: a glide takes at least 1 frame")
        if not self.hold >= 0:
            raise UserError(f"--hold {self.hold}: use 0 or more seconds")


class Explorer:
    """The explorer's state: the tour, the decoded frame, the temperature, what the status line says."""

    def __init__(self, vae: TrainedVAE, named: list[tuple[str, str]], settings: Settings) -> None:
        self.vae, self.settings = vae, settings
        self.rng = random.Random(settings.seed)
        self.stops = [Stop(name, z) for (name, _), z in zip(named, vae.encode([text for _, text in named]))]
        self.temperature = settings.temperature
        self.paused = False
        self.note, self.note_until = "", 0.0
        self.tour = Tour(self.stops[0], settings.steps, round(settings.hold * settings.frame_rate),
                         settings.smooth, settings.path)
        self.tour.go_to(self.next_stop())
        self.codes = self.decode()

    def decode(self) -> np.ndarray:
        return self.vae.decode(self.tour.z()[None]).codes[0]

    def next_stop(self) -> Stop:
        """A random stop other than the current target (a prior sample when there is only one piece)."""
        others = [s for s in self.stops if s is not self.tour.b]
        return self.rng.choice(others) if others else self.prior_stop()

    def prior_stop(self) -> Stop:
        z = self.vae.prior(1, self.temperature, self.rng.randrange(2**31))[0]
        return Stop(f"prior t={self.temperature:.1f}", z)

    def tick(self) -> None:
        """One frame on: along the glide, or on to a new piece once the hold is over."""
        if self.tour.wants_next:
            self.tour.go_to(self.next_stop())
        self.tour.advance()
        self.codes = self.decode()

    def save(self) -> str:
        """The current frame, cropped to its ink, in the first free explore-NNN.txt of the save directory."""
        n = 1
        while storage.exists(path := storage.join(self.settings.save_dir, f"explore-{n:03d}.txt")):
            n += 1
        storage.write_bytes(path, (charset.decode(self.codes) + "\n").encode())
        return path

    def key(self, key: int) -> bool:
        """Answer a key; False to quit."""
        if key in (ord("q"), ord("Q")):
            return False
        if key == ord(" "):
            self.paused = not self.paused
        elif key == ord("n"):
            self.tour.go_to(self.next_stop())
        elif key == ord("p"):
            self.tour.go_to(self.prior_stop())
        elif key in (ord("+"), ord("=")):
            self.temperature = round(self.temperature + TEMPERATURE_STEP, 6)
        elif key in (ord("-"), ord("_")):
            self.temperature = max(TEMPERATURE_STEP, round(self.temperature - TEMPERATURE_STEP, 6))
        elif key == ord("."):
            self.paused = True
            self.tick()
        elif key == ord("s"):
            self.note, self.note_until = f"saved {self.save().rsplit('/', 1)[-1]}", time.monotonic() + NOTE_S
        return True

    def status(self) -> str:
        t = self.tour
        where = (f"at {t.b.name}  hold {t.held}/{t.hold}" if t.arrived
                 else f"{t.a.name} -> {t.b.name}  step {t.k}/{t.steps}")
        notes = ["PAUSED"] * self.paused + [self.note] * (time.monotonic() < self.note_until)
        return f" {'  '.join([where, *notes])}  |  t={self.temperature:.1f}  {self.settings.frame_rate:g} fps  |  {HELP}"

    def draw(self, screen: curses.window) -> None:
        screen.erase()
        height, width = screen.getmaxyx()
        rows, cols = charset.ink_box(self.codes[None])
        need_h, need_w = rows.stop - rows.start, cols.stop - cols.start
        if need_h > height - 1 or need_w > width:
            message = (f"The terminal ({width}x{height}) is too small for this frame: it needs {need_w} columns "
                       f"and {need_h + 1} rows with the status line. Enlarge it, or press q to quit.")
            for y, line in enumerate(textwrap.wrap(message, max(1, width - 1))[:height]):
                _put(screen, y, 0, line)
        else:
            grid = self.vae.grid
            top = _place(rows.start, rows.stop, (height - 1) // 2 - grid // 2, height - 1)
            left = _place(cols.start, cols.stop, width // 2 - grid // 2, width)
            for r, line in enumerate(charset.crop_texts(self.codes[None])[0].split("\n")):
                _put(screen, top + rows.start + r, left + cols.start, line)
            _put(screen, height - 1, 0, self.status().ljust(width)[:width - 1], curses.A_REVERSE)
        screen.refresh()

    def loop(self, screen: curses.window) -> None:
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        interval = 1.0 / self.settings.frame_rate
        due = time.monotonic() + interval
        self.draw(screen)
        while True:
            screen.timeout(max(0, round((due - time.monotonic()) * 1000)))
            key = screen.getch()
            if key != -1:
                if not self.key(key):
                    return
            elif time.monotonic() >= due:
                if not self.paused:
                    self.tick()
                due = max(due + interval, time.monotonic())
            self.draw(screen)

    def run(self) -> int:
        curses.wrapper(self.loop)
        return 0


def _place(start: int, stop: int, offset: int, size: int) -> int:
    """The screen offset of a grid whose ink spans [start, stop): `offset` (grid centred), moved just
    enough to keep the ink inside [0, size)."""
    return min(max(offset, -start), size - stop)


def _put(screen: curses.window, y: int, x: int, text: str, attr: int = 0) -> None:
    try:
        screen.addstr(y, x, text, attr)
    except curses.error:
        pass  # the bottom-right cell cannot be written without scrolling; the rest is inside the screen
