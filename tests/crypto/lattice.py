"""Exact small-dimension lattice tools for attack demonstrations: LLL and Babai's nearest plane (Python integers)."""

from __future__ import annotations

from fractions import Fraction


def _gram_schmidt(basis: list[list[int]]) -> tuple[list[list[Fraction]], list[Fraction]]:
    ortho: list[list[Fraction]] = []
    norms: list[Fraction] = []
    for b in basis:
        v = [Fraction(x) for x in b]
        for o, nrm in zip(ortho, norms):
            mu = sum(Fraction(x) * y for x, y in zip(b, o)) / nrm
            v = [x - mu * y for x, y in zip(v, o)]
        ortho.append(v)
        norms.append(sum(x * x for x in v))
    return ortho, norms


def lll(basis: list[list[int]], delta: Fraction = Fraction(99, 100)) -> list[list[int]]:
    """LLL-reduce a full-rank integer basis (rows); exact arithmetic, meant for dimensions below ~12."""
    b = [list(row) for row in basis]
    k = 1
    ortho, norms = _gram_schmidt(b)
    while k < len(b):
        for j in range(k - 1, -1, -1):
            mu = sum(Fraction(x) * y for x, y in zip(b[k], ortho[j])) / norms[j]
            r = round(mu)
            if r:
                b[k] = [x - r * y for x, y in zip(b[k], b[j])]
        ortho, norms = _gram_schmidt(b)
        mu = sum(Fraction(x) * y for x, y in zip(b[k], ortho[k - 1])) / norms[k - 1]
        if norms[k] >= (delta - mu * mu) * norms[k - 1]:
            k += 1
        else:
            b[k], b[k - 1] = b[k - 1], b[k]
            ortho, norms = _gram_schmidt(b)
            k = max(k - 1, 1)
    return b


class NearestPlane:
    """Babai's nearest-plane decoder for one reduced basis, reused for many targets."""

    def __init__(self, basis: list[list[int]]) -> None:
        self.basis = basis
        ortho, norms = _gram_schmidt(basis)
        # integer form of each Gram-Schmidt vector: o = num / den, so <t, o> / <o, o> = <t, num> den / <num, num>
        self._planes = []
        for o, nrm in zip(ortho, norms):
            den = 1
            for x in o:
                den = den * x.denominator // _gcd(den, x.denominator)
            num = [int(x * den) for x in o]
            self._planes.append((num, den, sum(x * x for x in num)))

    def closest(self, target: list[int]) -> list[int]:
        """The lattice vector Babai's nearest plane returns for ``target``."""
        t = list(target)
        out = [0] * len(t)
        for (num, den, nn), b in zip(reversed(self._planes), reversed(self.basis)):
            c = _round_div(sum(x * y for x, y in zip(t, num)) * den, nn)
            if c:
                t = [x - c * y for x, y in zip(t, b)]
                out = [x + c * y for x, y in zip(out, b)]
        return out


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _round_div(a: int, b: int) -> int:
    """round(a / b) for integers, b > 0."""
    return (2 * a + b) // (2 * b)
