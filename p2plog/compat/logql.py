r"""The subset of Grafana Loki's LogQL that p2plog's Loki-compatible read API serves (its time and
duration parameters are ``compat.loki_time``). Pure: parsing and matching only, no I/O.

Supported: a stream selector ``{name="value", name!="value", name=~"regex", name!~"regex"}``
(``{}`` too, and a trailing comma) followed by any number of line filters ``|= "text"``,
``!= "text"``, ``|~ "regex"``, ``!~ "regex"``, whitespace between any tokens. Strings are Go
strings: ``"..."`` with the escapes ``\" \\ \n \t \r \uXXXX`` (any other is an error, so a
regex's ``\d`` is written ``"\\d"``), or raw ```...``` strings without escapes. As in Loki, a
missing label counts as "" and label regexes are anchored at both ends; line regexes are not.
Refused with a LogQLError that names the construct and its position: metric queries
(``rate(``, ``sum by (...)``, ranges ``[5m]``: ``compat.logql_metric`` parses those), pipeline
stages (``| json``, label filters ``| status >= 400`` ...), pattern filters ``|>`` / ``!>``,
and ``or`` between filter strings. Sizes are capped by
MAX_QUERY_CHARS, MAX_TERMS (matchers plus filters) and MAX_REGEX_CHARS.

Regexes are Google RE2 (``google-re2``): its syntax is the one Loki (Go's regexp) accepts, and it
matches in time linear in the input, so a reader cannot stall a node with a pattern that makes
a backtracking engine take exponential time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import re2  # type: ignore[import-untyped]

SELECTOR_SUPPORTED = 'a stream selector {name="value", name!="value", name=~"regex", name!~"regex"}'
SUPPORTED = (
    SELECTOR_SUPPORTED + ' followed by line filters |= "text", != "text", |~ "regex", !~ "regex"'
)
# (Metric queries have their own parser, ``compat.logql_metric``; here they are not a log query.)
METRIC = "a metric query (rate, count_over_time, sum ...) is not a log query"
MAX_QUERY_CHARS = 16384
MAX_TERMS = 64  # label matchers plus line filters
MAX_REGEX_CHARS = 1024
MATCHER_OPS = ("=", "!=", "=~", "!~")
FILTER_OPS = ("|=", "!=", "|~", "!~")

# Tokens: a string, a name, an operator or bracket, whitespace, any other character.
_TOKEN = re.compile(
    r'(?P<s>"(?:[^"\\\n]|\\.)*"|`[^`]*`)|(?P<n>[a-zA-Z_][a-zA-Z0-9_]*)|(?P<w>[ \t\r\n]+)'
    r"|(?P<o>=~|!~|!=|\|=|\|~|\|>|!>|>=|<=|==|[{}()\[\],=|<>])|(?P<x>.)",
    re.DOTALL,
)
_Token = tuple[str, str, int]  # kind (a _TOKEN group, or "end"), text, position
# Go's string escapes (strconv.Unquote, what Loki and Promtail's %q labels use): \xHH and
# octal \ooo are bytes, so the text is rebuilt as UTF-8 (an invalid sequence becomes U+FFFD).
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|[0-7]{3}|.)", re.DOTALL)
_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}
_STAGE = re.compile(
    r"json|logfmt|pattern|regexp|line_format|label_format|unpack|drop|keep|decolorize|unwrap"
)
_COMPARISONS = ("==", "!=", "=~", "!~", ">=", "<=", "=", ">", "<")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error comes back as a LogQLError, not on stderr


class LogQLError(ValueError):
    """What is wrong with a query, phrased for the user (becomes a 400)."""


def short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


class _Regex:
    """A compiled RE2 pattern behind a typed face (google-re2 ships no type hints)."""

    __slots__ = ("_compiled",)

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_REGEX_CHARS:
            raise LogQLError(
                f"regex {short(pattern)} is {len(pattern)} characters; "
                f"the limit is {MAX_REGEX_CHARS}"
            )
        try:
            self._compiled: Any = re2.compile(pattern, _RE2_OPTIONS)
        except re2.error as e:
            why = e.args[0] if e.args else e
            why = why.decode("utf-8", "replace") if isinstance(why, bytes) else str(why)
            raise LogQLError(f"bad regex {short(pattern)}: {why}") from None
        except UnicodeEncodeError:
            raise LogQLError(f"bad regex {short(pattern)}: not valid Unicode") from None

    def test(self, text: str, whole: bool) -> bool:
        """Whether the pattern matches all of ``text`` (``whole``) or somewhere in it."""
        find = self._compiled.fullmatch if whole else self._compiled.search
        try:
            return find(text) is not None
        except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800") has no UTF-8
            return find(text.encode("utf-8", "replace").decode()) is not None


def _regex_of(op: str, value: str, ops: tuple[str, ...]) -> _Regex | None:
    if op not in ops:
        raise LogQLError(f"unknown operator {op!r}; expected one of {', '.join(ops)}")
    return _Regex(value) if op.endswith("~") else None


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher of a stream selector; its regex is compiled once, here."""

    name: str
    op: str  # "=", "!=", "=~", "!~"
    value: str
    _regex: _Regex | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", _regex_of(self.op, self.value, MATCHER_OPS))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Loki's rules: a missing label is "", a regex must match the whole value."""
        value = labels.get(self.name, "")
        if self._regex is None:
            return (value == self.value) == (self.op == "=")
        return self._regex.test(value, whole=True) == (self.op == "=~")


@dataclass(frozen=True, slots=True)
class LineFilter:
    """One line filter; its regex is compiled once, here."""

    op: str  # "|=", "!=", "|~", "!~"
    value: str
    _regex: _Regex | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", _regex_of(self.op, self.value, FILTER_OPS))

    def matches(self, line: str) -> bool:
        """Substring for |= and !=; for |~ and !~ a regex found anywhere in the line."""
        if self._regex is None:
            return (self.value in line) == (self.op == "|=")
        return self._regex.test(line, whole=False) == (self.op == "|~")


@dataclass(frozen=True, slots=True)
class LogQuery:
    """A parsed query: a record matches if every matcher and every filter does."""

    matchers: tuple[Matcher, ...]
    filters: tuple[LineFilter, ...]

    def matches(self, labels: Mapping[str, str], line: str) -> bool:
        return all(m.matches(labels) for m in self.matchers) and all(
            f.matches(line) for f in self.filters
        )

    def equal(self, name: str) -> str | None:
        """The value of an "=" matcher on ``name``, if any (for a caller's own index)."""
        return next((m.value for m in self.matchers if m.name == name and m.op == "="), None)


class _Parser:
    """The query as tokens; errors name what was found and where (characters count from 1)."""

    def __init__(self, text: str, supported: str) -> None:
        if len(text) > MAX_QUERY_CHARS:
            raise LogQLError(f"query is {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
        self.text, self.supported, self.i, self.terms = text, supported, 0, 0
        self.tokens: list[_Token] = [
            (str(m.lastgroup), m.group(), m.start())
            for m in _TOKEN.finditer(text)
            if m.lastgroup != "w"
        ]
        self.tokens.append(("end", "", len(text)))

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        token = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def fail(self, what: str, pos: int, found: bool = True) -> LogQLError:
        if found:
            snippet = self.text[pos : pos + 20].partition("\n")[0]
            more = "..." if len(self.text) > pos + len(snippet) else ""
            what += f", found `{snippet}{more}`" if snippet else ", found the end of the query"
        return LogQLError(f"{what} at character {pos + 1}; supported: {self.supported}")

    def string(self, after: str) -> str:
        """The string token next; each matcher and filter has one, so here they are counted."""
        self.terms += 1
        if self.terms > MAX_TERMS:
            what = f"{MAX_TERMS} label matchers and line filters in total"
            raise LogQLError(f"query has more than {what}; that is the limit")
        kind, text, pos = self.next()
        if kind == "s" and text[0] == "`":
            return text[1:-1]
        if kind == "s":
            return self.unquote(text[1:-1], pos + 1)
        if text in ('"', "`"):
            raise self.fail("unterminated string", pos, found=False)
        raise self.fail(f"expected a string after `{after}`", pos)

    def unquote(self, body: str, base: int) -> str:
        out, at = bytearray(), 0
        for e in _ESCAPE.finditer(body):
            out += body[at : e.start()].encode("utf-8", "surrogatepass")
            out += self.unescape(e, base)
            at = e.end()
        out += body[at:].encode("utf-8", "surrogatepass")
        return out.decode("utf-8", "replace")

    def unescape(self, e: re.Match[str], base: int) -> bytes:
        code = e.group(1)
        if code in _ESCAPES:
            return _ESCAPES[code].encode()
        if code[0] in "xX01234567" and len(code) in (3, 2 + (code[0] != "x")):
            return bytes([int(code[1:], 16) if code[0] == "x" else int(code, 8) & 0xFF])
        if code[0] in "uU" and len(code) in (5, 9):
            cp = int(code[1:], 16)
            if not 0xD800 <= cp <= 0xDFFF and cp <= 0x10FFFF:
                return chr(cp).encode()
        what = f"invalid escape `\\{code}` in a string (a regex's \\ is \\\\, or use a `raw` one)"
        raise self.fail(what, base + e.start(), found=False)

    def selector(self) -> tuple[Matcher, ...]:
        kind, text, pos = self.next()
        if text != "{":
            after = self.peek()[1]
            if kind == "n" and (after == "(" or after in ("by", "without")):
                raise self.fail(METRIC, pos)
            raise self.fail("expected a stream selector {...}", pos)
        matchers: list[Matcher] = []
        while self.peek()[1] != "}":
            kind, name, pos = self.next()
            if kind != "n":
                raise self.fail("expected a label name or `}`", pos)
            _, op, pos = self.next()
            if op not in MATCHER_OPS:
                raise self.fail(f"expected =, !=, =~ or !~ after `{name}`", pos)
            matchers.append(Matcher(name, op, self.string(name + op)))
            _, sep, pos = self.peek()
            if sep not in (",", "}"):
                raise self.fail("expected `,` or `}` after a label matcher", pos)
            self.i += sep == ","
        self.next()
        return tuple(matchers)

    def filters(self) -> tuple[LineFilter, ...]:
        found: list[LineFilter] = []
        while (token := self.next())[0] != "end":
            _, op, pos = token
            if op not in FILTER_OPS:
                raise self.not_filter(op, pos)
            found.append(LineFilter(op, self.string(op)))
            if self.peek()[1] == "or":
                what = '`or` between line filter strings is not supported (|~ "a|b" is)'
                raise self.fail(what, self.peek()[2], found=False)
        return tuple(found)

    def not_filter(self, op: str, pos: int) -> LogQLError:
        if op in ("|>", "!>"):
            return self.fail(f"pattern filter `{op}` is not supported", pos, found=False)
        if op == "[":
            return self.fail(METRIC, pos)
        kind, name, _ = self.next()
        if op == "|" and kind == "n":
            comparison = self.peek()[1]
            if _STAGE.fullmatch(name) or comparison not in _COMPARISONS:
                return self.fail(f"pipeline stage `| {name}` is not supported", pos, found=False)
            stage = f"`| {name} {comparison} ...` (a label filter)"
            return self.fail(f"pipeline stage {stage} is not supported", pos, found=False)
        return self.fail("expected a line filter", pos)


def parse_query(text: str) -> LogQuery:
    """A query of the supported subset (see SUPPORTED), or LogQLError."""
    parser = _Parser(text, SUPPORTED)
    matchers = parser.selector()
    return LogQuery(matchers, parser.filters())


def parse_selector(text: str) -> tuple[Matcher, ...]:
    """Just ``{...}``, nothing after it: Loki push's labels, /series ``match[]``."""
    parser = _Parser(text, SELECTOR_SUPPORTED)
    matchers = parser.selector()
    kind, _, pos = parser.peek()
    if kind != "end":
        raise parser.fail("unexpected text after the stream selector", pos)
    return matchers


def labels_of_selector(text: str) -> dict[str, str]:
    """A push's labels string ``{job="x", level="info"}`` as name -> value: "=" only, once each."""
    labels: dict[str, str] = {}
    for m in parse_selector(text):
        if m.op != "=":
            raise LogQLError(f'`{m.name}{m.op}` in a stream\'s labels: only name="value" is')
        if m.name in labels:
            raise LogQLError(f"label `{m.name}` is given twice")
        labels[m.name] = m.value
    return labels
