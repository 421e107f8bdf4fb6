"""The lock files (requirements/*.lock, made by `make lock`) pin every package with its hashes, and
every pin satisfies the range its requirements/*.txt gives: a lock made before a range changed,
or edited by hand, fails here rather than in a deployment."""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bankcore.testing.paths import ROOT

REQUIREMENTS = ROOT / "requirements"
LOCKS = ["base", "dev", "prod"]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def ranges(path: Path) -> list[Requirement]:
    """The requirements of a .txt file, those of the files it includes (-r) too."""
    found: list[Requirement] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            found += ranges(path.parent / line[3:].strip())
        else:
            found.append(Requirement(line))
    return found


def pins(path: Path) -> dict[str, str]:
    """name -> version of a lock file, each pin followed by at least one hash."""
    text = path.read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1] if text.startswith("#") else text)
    pinned: dict[str, str] = {}
    for entry in entries:
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        match = _PIN.match(entry)
        assert match, f"{path.name}: not an exact pin: {entry.splitlines()[0]}"
        assert "--hash=sha256:" in entry, f"{path.name}: {match.group(1)} has no hash"
        pinned[canonicalize_name(match.group(1))] = match.group(2)
    return pinned


@pytest.mark.parametrize("name", LOCKS)
def test_every_pin_has_hashes_and_satisfies_its_range(name):
    locked = pins(REQUIREMENTS / f"{name}.lock")
    for requirement in ranges(REQUIREMENTS / f"{name}.txt"):
        key = canonicalize_name(requirement.name)
        assert key in locked, f"{name}.lock does not pin {requirement.name}: run make lock"
        assert requirement.specifier.contains(locked[key], prereleases=True), (
            f"{name}.lock pins {requirement.name}=={locked[key]}, outside {requirement.specifier}: run make lock"
        )


def test_the_locks_agree_on_what_they_share():
    base, dev, prod = (pins(REQUIREMENTS / f"{name}.lock") for name in LOCKS)
    for other, label in ((dev, "dev"), (prod, "prod")):
        differ = {n: (v, other[n]) for n, v in base.items() if n in other and other[n] != v}
        assert not differ, f"base.lock and {label}.lock pin differently: {differ}; run make lock"
