"""The documentation names only what exists: README.md and docs/*.md are read as text, no database.

Every relative link points at a file of the repository and every ``#anchor`` at a heading of its
target (GitHub's slugs); a link leaving the repository is an http(s) URL. Every ``manage.py
<command>`` is a management command of the project and takes the options given it, every ``make
<target>`` a target of the Makefile, every URL path (``/api/…``, ``/admin/``, ``/health``) one the
application serves, every repository path in a code span exists, and every dotted name of the
project's packages in a code span resolves to a module, an attribute, a model or a permission. No
text points outside the repository.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import re
import unicodedata
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest
from django.apps import apps
from django.core.management import get_commands, load_command_class
from django.urls import Resolver404, resolve

from bankcore.testing.paths import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("accounts", "transfers", "audit", "bankcore", "bench")
# Paths of the repository a code span may name: those starting with one of its top-level entries.
TOP_LEVEL = {entry.name for entry in ROOT.iterdir() if not entry.name.startswith(".git")} - {".venv", "var"}

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*(\w*)")
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
MANAGE = re.compile(r"manage\.py\s+([A-Za-z_][\w-]*)")
# `make` where a command starts: a span's or a line's beginning, or after a shell operator.
MAKE = re.compile(r"(?:^|&&|\|\||;|\(|\$ )\s*make((?:[ \t]+[A-Za-z_][\w.-]*(?:=\S*)?)+)", re.MULTILINE)


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@cache
def _split(path: Path) -> tuple[list[str], list[str]]:
    """The file's prose lines and the lines of its fenced code blocks, apart; diagrams (mermaid)
    are neither."""
    prose: list[str] = []
    code: list[str] = []
    fence, diagram = "", False
    for line in path.read_text(encoding="utf-8").splitlines():
        opened = FENCE.match(line)
        if fence:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence) and not opened.group(2):
                fence = ""
            elif not diagram:
                code.append(line)
        elif opened:
            fence, diagram = opened.group(1), opened.group(2) == "mermaid"
        else:
            prose.append(line)
    return prose, code


def _prose(path: Path) -> str:
    return "\n".join(_split(path)[0])


def _without_code_spans(text: str) -> str:
    return CODE_SPAN.sub(" ", text)


def _code(path: Path) -> list[str]:
    """What the file writes as code: its code spans and its fenced blocks."""
    spans = [match.group(2) for match in CODE_SPAN.finditer(_prose(path))]
    return spans + _split(path)[1]


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, every character but letters,
    marks, digits, connectors, spaces and hyphens dropped, spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "").strip().lower()
    kept = [c for c in text if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc"]
    return "".join(kept).replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in _split(path)[0]:
        heading = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = github_slug(heading.group(1))
        seen = counts.get(slug, 0)
        counts[slug] = seen + 1
        found.add(slug if seen == 0 else f"{slug}-{seen}")
    return found


def _links(path: Path) -> list[str]:
    return [match.group(1) for match in LINK.finditer(_without_code_spans(_prose(path)))]


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_links_point_at_files_and_headings_of_the_repository(doc: Path) -> None:
    wrong = []
    for target in _links(doc):
        if re.match(r"https?://", target):
            continue
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            wrong.append(f"{target}: leaves the repository (only http(s) links may)")
            continue
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / unquote(file_part)).resolve() if file_part else doc
        if not linked.is_relative_to(ROOT):
            wrong.append(f"{target}: leaves the repository")
        elif not linked.exists():
            wrong.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            wrong.append(f"{target}: no heading #{anchor} in {_id(linked)}")
        elif anchor and linked.suffix != ".md":
            wrong.append(f"{target}: an anchor into a file that has no headings")
    assert not wrong, f"{_id(doc)}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_manage_py_commands_exist(doc: Path) -> None:
    commands = get_commands()
    named = {name for code in _code(doc) for name in MANAGE.findall(code)}
    unknown = sorted(named - set(commands))
    assert not unknown, f"{_id(doc)} names management commands that do not exist: {unknown}"


# A command and what follows it up to the end of the span or line, a comment or a shell operator.
MANAGE_CALL = re.compile(r"manage\.py\s+([A-Za-z_][\w-]*)([^#|&;`\n]*)")


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_manage_py_options_exist(doc: Path) -> None:
    commands = get_commands()
    unknown = []
    for code in _code(doc):
        for name, rest in MANAGE_CALL.findall(code):
            if name not in commands:
                continue  # test_manage_py_commands_exist names it
            parser = load_command_class(commands[name], name).create_parser("manage.py", name)
            options = set(parser._option_string_actions)
            unknown += [
                f"{name} {flag}" for flag in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", rest) if flag not in options
            ]
    assert not unknown, f"{_id(doc)} names options the commands do not have: {sorted(set(unknown))}"


@cache
def make_targets() -> set[str]:
    targets: set[str] = set()
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        rule = re.match(r"^([A-Za-z$(][^:=\s]*(?:\s+[^:=\s]+)*)\s*:(?!=)", line)
        if rule:
            targets.update(rule.group(1).split())
    return targets


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_make_targets_exist(doc: Path) -> None:
    named: set[str] = set()
    for code in _code(doc):
        for match in MAKE.finditer(code):
            named.update(word for word in match.group(1).split() if "=" not in word)
    unknown = sorted(named - make_targets())
    assert named or doc.name != "README.md", "README.md names no make target"
    assert not unknown, f"{_id(doc)} names make targets the Makefile does not have: {unknown}"


def _repository_paths(doc: Path) -> set[str]:
    paths = set()
    for span in (match.group(2) for match in CODE_SPAN.finditer(_prose(doc))):
        for word in re.split(r"[\s,;()\[\]=\"']+", span):
            word = word.rstrip(".:")
            if "/" in word and word.split("/", 1)[0] in TOP_LEVEL and not re.search(r"[<>{}*…$]", word):
                paths.add(word.split("#", 1)[0])
    return paths


def _never_committed(path: str) -> bool:
    """Whether a .gitignore on the way to ``path`` keeps it out of the repository: a certificate or
    a key the operator puts in place."""
    ignored = False
    parts = path.split("/")
    for depth in range(len(parts)):
        rules = ROOT.joinpath(*parts[:depth]) / ".gitignore"
        if not rules.is_file():
            continue
        below = "/".join(parts[depth:])
        for rule in rules.read_text(encoding="utf-8").splitlines():
            rule = rule.strip()
            if not rule or rule.startswith("#"):
                continue
            negated = rule.startswith("!")
            pattern = rule.lstrip("!").strip("/")
            subject = below if "/" in pattern else parts[-1]
            if fnmatch.fnmatchcase(subject, pattern):
                ignored = not negated
    return ignored


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_repository_paths_exist(doc: Path) -> None:
    missing = sorted(
        path for path in _repository_paths(doc) if not (ROOT / path).exists() and not _never_committed(path)
    )
    assert not missing, f"{_id(doc)} names paths that do not exist: {missing}"


def _resolves(name: str) -> bool:
    """A module, an attribute of one, a model (``app.Model``) or a permission (``app.codename``)."""
    parts = name.split(".")
    if name.startswith("bankcore.settings"):
        # Settings modules check the environment when imported; that they exist is enough.
        return importlib.util.find_spec(name) is not None
    for i in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attribute in parts[i:]:
                found = getattr(found, attribute)
        except AttributeError:
            break
        return True
    if len(parts) == 2 and parts[0] in apps.app_configs:
        for model in apps.get_app_config(parts[0]).get_models():
            codenames = {f"{action}_{model._meta.model_name}" for action in model._meta.default_permissions}
            codenames |= {codename for codename, _ in model._meta.permissions}
            if parts[1] in {model.__name__, *codenames}:
                return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_dotted_names_resolve(doc: Path) -> None:
    importlib.import_module("bankcore.urls")  # every app's modules, in the order Django loads them
    pattern = re.compile(rf"(?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+")
    named = {
        match.group(0)
        for match in (pattern.fullmatch(span.strip()) for span in (m.group(2) for m in CODE_SPAN.finditer(_prose(doc))))
        if match and not match.group(0).endswith((".py", ".log", ".md"))
    }
    unresolved = sorted(name for name in named if not _resolves(name))
    assert not unresolved, f"{_id(doc)} names what does not exist: {unresolved}"


# A path of the application: in a code span or block, or an endpoint of api.md's table (under /api/v1/).
APP_PATH = re.compile(r"(?<![\w.])/(?:api|admin|health|metrics)(?:\{[^}\n]*\}|[^\s`'\"?)\]{])*")
ENDPOINT = re.compile(r"^\| `(?:GET|POST|PUT|PATCH|DELETE) ([a-z][^`\s]*)`", re.MULTILINE)
PLACEHOLDER = re.compile(r"[{}$<>…]")
SAMPLE = {
    "accounts": "01000000000017",
    "transfers": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "transfer-batches": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
}


def _app_paths(doc: Path) -> set[str]:
    paths = {match.group(0) for code in _code(doc) for match in APP_PATH.finditer(code)}
    if doc.name == "api.md":
        paths |= {"/api/v1/" + match.group(1) for match in ENDPOINT.finditer(_prose(doc))}
    return paths


def _concrete(path: str) -> str:
    """The path with each placeholder segment (``{number}``, ``$ID``, ``…``) made a sample value."""
    segments = path.split("/")
    for i, segment in enumerate(segments):
        if PLACEHOLDER.search(segment):
            segments[i] = SAMPLE.get(segments[i - 1], "x")
    concrete = "/".join(segments)
    return concrete + "/" if PLACEHOLDER.search(path.split("/")[-1]) else concrete


def _served(path: str) -> bool:
    from bankcore.api.problems import api_not_found

    try:
        return resolve(path).func is not api_not_found
    except Resolver404:
        return False


@cache
def served_anywhere() -> frozenset[str]:
    return frozenset(c for doc in DOCS for c in map(_concrete, _app_paths(doc)) if _served(c))


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_application_paths_resolve(doc: Path) -> None:
    paths = {path: _concrete(path) for path in _app_paths(doc)}
    served = served_anywhere()
    # A prefix (``/api/v1/``) is right when a path the docs name under it is served.
    wrong = sorted(
        path
        for path, concrete in paths.items()
        if concrete not in served and not (concrete.endswith("/") and any(s.startswith(concrete) for s in served))
    )
    assert not wrong, f"{_id(doc)} names URLs the application does not serve: {wrong}"


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_nothing_points_outside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    found = [word for word in ("../shared", "DESIGN.md", "/work/") if word in text]
    assert not found, f"{_id(doc)} refers to what is not in the repository: {found}"


def test_github_slug_rules() -> None:
    assert github_slug('With the control plane\'s server: three commits (the "home" leg)') == (
        "with-the-control-planes-server-three-commits-the-home-leg"
    )
    assert github_slug("Backups: schedule, encryption, off-host copy") == "backups-schedule-encryption-off-host-copy"
    assert github_slug("`make run` and `make test`") == "make-run-and-make-test"
    assert github_slug("BankcoreHigh5xxRate") == "bankcorehigh5xxrate"
