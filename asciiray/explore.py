"""The explorer's walk through latent space: glides between stops and holds at each, one latent a frame.

Apart from its terminal (`asciiray.cli.explorer` times the walk, decodes and draws each frame), so the
walk is plain library code that tests can step through.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asciiray.errors import UserError
from asciiray.inference import mix


def ease(t: torch.Tensor) -> torch.Tensor:
    """Smoothstep: a glide that starts and ends slowly."""
    return t * t * (3 - 2 * t)


@dataclass
class Stop:
    """A point of latent space the explorer visits, and what to call it."""

    name: str
    z: torch.Tensor


class Tour:
    """The explorer's walk: glide from one stop to the next in `steps` frames, hold there for `hold`
    frames, then ask for the next stop. One latent, so one decode, per frame."""

    def __init__(self, start: Stop, steps: int, hold: int, smooth: bool = False, path: str = "linear") -> None:
        if steps < 1 or hold < 0:
            raise UserError(f"steps = {steps}, hold = {hold}: a glide takes at least 1 frame and holds 0 or more")
        self.steps, self.hold, self.smooth, self.path = steps, hold, smooth, path
        self.a = self.b = start
        self.k, self.held = steps, 0

    @property
    def arrived(self) -> bool:
        return self.k == self.steps

    @property
    def wants_next(self) -> bool:
        """At the stop and held there long enough."""
        return self.arrived and self.held >= self.hold

    def z(self) -> torch.Tensor:
        """The latent [z] of the current frame."""
        if self.arrived:
            return self.b.z
        t = torch.tensor([self.k / self.steps])
        return mix(self.a.z, self.b.z, ease(t) if self.smooth else t, self.path)[0]

    def advance(self) -> None:
        """One frame on: a step of the glide, or a frame of the hold."""
        if self.arrived:
            self.held += 1
        else:
            self.k += 1

    def go_to(self, stop: Stop) -> None:
        """Glide from where the tour is now to `stop`."""
        here = self.b if self.arrived else Stop(f"{self.a.name}~{self.b.name}", self.z())
        self.a, self.b, self.k, self.held = here, stop, 0, 0
