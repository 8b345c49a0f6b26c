"""Random mutations of JSON documents: the fuzz tests of manifests, stats folders and Zarr metadata share them."""
from __future__ import annotations

import copy
import random
from typing import NamedTuple


class Mutations(NamedTuple):
    """How a document is mutated: the odd values swapped in, the chances of each kind of change."""

    odd: list  # values that replace a value, or fill an added key
    delete: float = 0.3  # below this: a key is deleted (where the parent is a dict)
    add: float = 0.45  # below this: an odd key is added
    scale: float = 0.6  # below this: a number is flipped, zeroed or made huge; else a value is swapped
    keys: tuple = ("surprise", "../k", "", "name")  # the names of added keys
    max_list: int | None = None  # longer lists are not walked into (their items are never mutated)

    def paths(self, value, prefix=()):
        """Every path (a tuple of keys and indices) to a value inside nested dicts and lists."""
        yield prefix
        if isinstance(value, dict):
            for k, v in value.items():
                yield from self.paths(v, prefix + (k,))
        elif isinstance(value, list) and (self.max_list is None or len(value) < self.max_list):
            for i, v in enumerate(value):
                yield from self.paths(v, prefix + (i,))

    def mutate(self, d, rng: random.Random):
        """A deep copy of d with one to three random changes."""
        d = copy.deepcopy(d)
        for _ in range(rng.randint(1, 3)):
            path = rng.choice([p for p in self.paths(d) if p])
            parent = d
            for key in path[:-1]:
                parent = parent[key]
            kind = rng.random()
            value = parent[path[-1]]
            if kind < self.delete and isinstance(parent, dict):
                del parent[path[-1]]
            elif kind < self.add and isinstance(parent, dict):
                parent[rng.choice(self.keys)] = copy.deepcopy(rng.choice(self.odd))
            elif kind < self.scale and isinstance(value, (int, float)) and not isinstance(value, bool):
                parent[path[-1]] = value * rng.choice([-1, 0, 1e300, 10**9])
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(self.odd))
        return d
