"""String grid distance: hidden instance generator and scorer (host only)."""

from stop.tasks import Instance
from stop.tasks.checks import exact_str


def grid_dist(s: str, t: str) -> int:
    """Positions where s and t differ, plus the adjacent unequal pairs within s and within t."""
    d = sum(a != b for a, b in zip(s, t, strict=True))
    d += sum(a != b for a, b in zip(s, s[1:], strict=False))
    d += sum(a != b for a, b in zip(t, t[1:], strict=False))
    return d


def generate(rng, nprng):
    length = rng.randint(1, 30)
    t = "".join(rng.choice("AB") for _ in range(length))
    s = "".join(rng.choice("AB") for _ in range(length))
    return Instance(args=[t, grid_dist(s, t)], data={"example": s})


def check(value, instance):
    t = instance.args[0]
    return exact_str(value, len(t), alphabet="AB", what="the returned string")


def score(s, instance):
    t, dist = instance.args
    d = grid_dist(s, t)
    if d == dist:
        return 1.0, "ok"
    return max(0.0, 0.5 - abs(d - dist) / (6 * len(t))), "wrong"
