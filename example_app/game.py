"""The saved game: a plain Python object that the session stores as it is.

A cookie session would need this turned into JSON and back by hand; a pickled
server-side session keeps the instance, its set of treasures and its datetime.
The class lives in an importable module (not ``__main__``) so that pickle can
find it again when the session is loaded by another process.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
import secrets

#: Moves and their (dx, dy).
DIRECTIONS = {"north": (0, -1), "south": (0, 1), "west": (-1, 0), "east": (1, 0)}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclasses.dataclass
class GameState:
    """A treasure hunt on a small grid; the player walks to find every treasure."""

    width: int = 5
    height: int = 5
    x: int = 0
    y: int = 0
    moves: int = 0
    treasures: set[tuple[int, int]] = dataclasses.field(default_factory=set)
    found: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    started: datetime.datetime = dataclasses.field(default_factory=_now)

    @classmethod
    def new(cls, seed: int | None = None, treasures: int = 3) -> GameState:
        """Start a game with treasures on random squares other than the start."""
        rng = random.Random(secrets.randbits(64) if seed is None else seed)
        squares = [(x, y) for x in range(5) for y in range(5) if (x, y) != (0, 0)]
        return cls(treasures=set(rng.sample(squares, treasures)))

    @property
    def won(self) -> bool:
        """True once every treasure is found."""
        return not self.treasures

    @property
    def score(self) -> int:
        """Ten points a treasure, minus one for every move."""
        return max(0, 10 * len(self.found) - self.moves)

    def move(self, direction: str) -> str:
        """Take one step; return what happened, for a flash message."""
        if self.won:
            return "The game is won; start a new one."
        dx, dy = DIRECTIONS[direction]
        x, y = self.x + dx, self.y + dy
        if not (0 <= x < self.width and 0 <= y < self.height):
            return f"A wall blocks the way {direction}."
        self.x, self.y = x, y
        self.moves += 1
        if (x, y) in self.treasures:
            self.treasures.remove((x, y))
            self.found.append((x, y))
            return "You found a treasure!"
        return f"You walk {direction}."

    def rows(self) -> list[list[str]]:
        """The board as CSS class names, row by row (treasures stay hidden)."""

        def cell(x: int, y: int) -> str:
            if (x, y) == (self.x, self.y):
                return "player"
            return "found" if (x, y) in self.found else "unknown"

        return [[cell(x, y) for x in range(self.width)] for y in range(self.height)]
