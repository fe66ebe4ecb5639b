"""p2plog.compat.logql: the LogQL subset, its refusals and limits, Loki's time parameters."""

from __future__ import annotations

import calendar
import dataclasses

import pytest
import re2  # type: ignore[import-untyped]

from p2plog.compat.logql import (
    MAX_QUERY_CHARS,
    MAX_REGEX_CHARS,
    MAX_TERMS,
    SELECTOR_SUPPORTED,
    SUPPORTED,
    LineFilter,
    LogQLError,
    LogQuery,
    Matcher,
    labels_of_selector,
    parse_query,
    parse_selector,
)
from p2plog.compat.loki_time import parse_duration, parse_time

S = 10**9


def _utc_ns(*ymdhms: int) -> int:
    return calendar.timegm((*ymdhms, 0, 0, 0)) * S


# --- parsing: the good cases -------------------------------------------------------------------


def test_supported_text_is_exact() -> None:
    assert SUPPORTED == (
        'a stream selector {name="value", name!="value", name=~"regex", name!~"regex"} '
        'followed by line filters |= "text", != "text", |~ "regex", !~ "regex"'
    )


def test_every_operator() -> None:
    q = parse_query('{a="1", b!="2", c=~"3.*", d!~"4"} |= "x" != "y" |~ "z+" !~ "w"')
    assert q.matchers == (
        Matcher("a", "=", "1"),
        Matcher("b", "!=", "2"),
        Matcher("c", "=~", "3.*"),
        Matcher("d", "!~", "4"),
    )
    assert q.filters == (
        LineFilter("|=", "x"),
        LineFilter("!=", "y"),
        LineFilter("|~", "z+"),
        LineFilter("!~", "w"),
    )


@pytest.mark.parametrize(
    "text",
    [
        '{a="b"}',
        '  {  a  =  "b"  }  ',
        '{a="b",}',
        '{a="b" , }',
        '\n{\ta\r\n=\n"b"\n}\n',
    ],
)
def test_whitespace_and_trailing_comma(text: str) -> None:
    assert parse_query(text) == LogQuery((Matcher("a", "=", "b"),), ())


def test_empty_selector_is_accepted() -> None:
    assert parse_query("{}") == LogQuery((), ())
    assert parse_query(' { } |= "x"').filters == (LineFilter("|=", "x"),)


def test_filters_without_whitespace() -> None:
    q = parse_query('{a="b"}|="x"!="y"|~"z"!~"w"')
    assert [f.op for f in q.filters] == ["|=", "!=", "|~", "!~"]


def test_label_names() -> None:
    q = parse_query('{_a="1", B_2="2", __name__="3"}')
    assert [m.name for m in q.matchers] == ["_a", "B_2", "__name__"]


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"a\"b"', 'a"b'),
        (r'"a\\b"', "a\\b"),
        (r'"a\nb"', "a\nb"),
        (r'"a\tb"', "a\tb"),
        (r'"a\rb"', "a\rb"),
        (r'"\u00e9\u20AC"', "é€"),
        (r'"é plain"', "é plain"),
        (r'""', ""),
        (r"`a\d+\n`", r"a\d+\n"),
        ('`two\nlines "quoted"`', 'two\nlines "quoted"'),
        ("``", ""),
    ],
)
def test_string_forms(literal: str, value: str) -> None:
    q = parse_query(f"{{a={literal}}} |= {literal}")
    assert q.matchers[0].value == value
    assert q.filters[0].value == value


@pytest.mark.parametrize("literal", [r'"\d"', r'"\x4"', r'"\u12"', r'"\ud800"', '"a\\'])
def test_bad_escapes(literal: str) -> None:
    with pytest.raises(LogQLError, match=r"escape|unterminated") as e:
        parse_query(f"{{a={literal}}}")
    assert str(e.value).endswith("; supported: " + SUPPORTED)


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"\x41\101"', "AA"),  # Go's byte escapes, hex and octal
        (r'"\x1b[0m"', "\x1b[0m"),  # Promtail's %q of a colour code
        (r'"\xc3\xa9"', "\u00e9"),  # bytes that make UTF-8
        (r'"\xff"', "\ufffd"),  # and bytes that do not
        (r'"\U0001F600\a\v"', "\U0001f600\a\v"),
    ],
)
def test_go_escapes(literal: str, value: str) -> None:
    assert parse_query(f"{{a={literal}}}").matchers[0].value == value


def test_bad_escape_names_the_escape_and_its_position() -> None:
    with pytest.raises(LogQLError, match=r"invalid escape `\\d` .* at character 5;"):
        parse_query(r'{a="\d"}')


def test_unterminated_strings() -> None:
    for text in ['{a="b}', "{a=`b}", '{a="b\nc"}']:
        with pytest.raises(LogQLError, match="unterminated string at character 4;"):
            parse_query(text)


# --- matching semantics ------------------------------------------------------------------------


def test_matcher_equal_and_not_equal() -> None:
    assert Matcher("a", "=", "x").matches({"a": "x"})
    assert not Matcher("a", "=", "x").matches({"a": "y"})
    assert Matcher("a", "!=", "x").matches({"a": "y"})
    assert not Matcher("a", "!=", "x").matches({"a": "x"})


def test_missing_label_counts_as_empty() -> None:
    assert Matcher("a", "=", "").matches({})
    assert not Matcher("a", "!=", "").matches({})
    assert Matcher("a", "!=", "x").matches({})
    assert not Matcher("a", "=", "x").matches({})
    assert Matcher("a", "=~", ".*").matches({})
    assert not Matcher("a", "=~", ".+").matches({})
    assert Matcher("a", "!~", ".+").matches({})


def test_label_regexes_are_anchored() -> None:
    assert not Matcher("a", "=~", "b").matches({"a": "abc"})
    assert Matcher("a", "=~", "b").matches({"a": "b"})
    assert Matcher("a", "=~", "a.c|x").matches({"a": "abc"})
    assert Matcher("a", "=~", "x|a.c").matches({"a": "abc"})  # anchored around the alternation
    assert Matcher("a", "!~", "b").matches({"a": "abc"})
    assert not Matcher("a", "!~", "ab.").matches({"a": "abc"})


def test_line_filters() -> None:
    assert LineFilter("|=", "rr").matches("an error here")
    assert not LineFilter("|=", "Error").matches("an error here")
    assert LineFilter("!=", "debug").matches("an error here")
    assert not LineFilter("!=", "err").matches("an error here")
    assert LineFilter("|~", "err(or)?").matches("an error here")  # unanchored
    assert LineFilter("|~", "(?i)ERROR").matches("an error here")
    assert not LineFilter("|~", "^error").matches("an error here")
    assert LineFilter("!~", "^error").matches("an error here")
    assert not LineFilter("!~", "e.r").matches("an error here")
    assert LineFilter("|=", "").matches("")


def test_query_matches_all_matchers_and_filters() -> None:
    q = parse_query('{source="api", level=~"error|warning"} |= "db" !~ "retry \\\\d+"')
    assert q.matches({"source": "api", "level": "error"}, "db down")
    assert not q.matches({"source": "api", "level": "info"}, "db down")
    assert not q.matches({"source": "web", "level": "error"}, "db down")
    assert not q.matches({"source": "api", "level": "error"}, "cache down")
    assert not q.matches({"source": "api", "level": "error"}, "db down, retry 3")
    assert parse_query("{}").matches({}, "anything")


def test_equal() -> None:
    q = parse_query('{level!="debug", source="api", host=~"a.*"}')
    assert q.equal("source") == "api"
    assert q.equal("level") is None
    assert q.equal("host") is None
    assert q.equal("missing") is None


def test_unicode_and_lone_surrogates() -> None:
    assert Matcher("a", "=~", "caf.").matches({"a": "café"})  # . is one code point
    assert LineFilter("|~", "x").matches("\ud800x")  # no UnicodeEncodeError
    assert not LineFilter("|~", "y").matches("\ud800x")


def test_regex_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = re2.compile

    def counting(pattern: str, options: object = None) -> object:
        calls.append(pattern)
        return real(pattern, options)

    monkeypatch.setattr(re2, "compile", counting)
    q = parse_query('{a=~"x.*"} |~ "y"')
    assert calls == ["x.*", "y"]
    for _ in range(5):
        q.matches({"a": "xz"}, "y")
    assert calls == ["x.*", "y"]


def test_dataclasses_frozen_equal_hashable() -> None:
    m = Matcher("a", "=~", "b")
    assert m == Matcher("a", "=~", "b")
    assert hash(m) == hash(Matcher("a", "=~", "b"))
    assert "_regex" not in repr(m)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.value = "c"  # type: ignore[misc]
    assert not hasattr(m, "__dict__")
    assert len({parse_query('{a="b"} |= "c"'), parse_query('{ a = "b" } |= `c`')}) == 1


def test_bad_operators_in_direct_construction() -> None:
    with pytest.raises(LogQLError, match="unknown operator '=='"):
        Matcher("a", "==", "b")
    with pytest.raises(LogQLError, match="unknown operator '~'"):
        LineFilter("~", "b")


# --- refusals ----------------------------------------------------------------------------------


def _error(text: str) -> str:
    with pytest.raises(LogQLError) as e:
        parse_query(text)
    message = str(e.value)
    assert message.endswith("; supported: " + SUPPORTED)
    return message


@pytest.mark.parametrize(
    "text",
    [
        'rate({a="b"}[5m])',
        'count_over_time({a="b"}[1h])',
        ' sum by (level) (count_over_time({a="b"}[1m]))',
        'sum without (level) (rate({a="b"}[1m]))',
        'sum(rate({a="b"}[1m])) by (level)',
        'topk (5, rate({a="b"}[1m]))',
        '{a="b"}[5m]',
        '{a="b"} |= "x" [5m]',
    ],
)
def test_metric_queries(text: str) -> None:
    assert "a metric query (rate, count_over_time, sum ...) is not a log query" in _error(text)


def test_metric_query_message_names_what_and_where() -> None:
    assert 'found `rate({a="b"}[5m])` at character 3;' in _error('  rate({a="b"}[5m])')
    assert "found `[5m]` at character 8;" in _error('{a="b"}[5m]')


@pytest.mark.parametrize(
    "stage",
    [
        "json",
        "logfmt",
        "pattern",
        "regexp",
        "line_format",
        "label_format",
        "unpack",
        "drop",
        "keep",
        "decolorize",
        "unwrap",
    ],
)
def test_pipeline_stages(stage: str) -> None:
    message = _error(f'{{a="b"}} |= "x" | {stage} foo="bar"')
    assert f"pipeline stage `| {stage}` is not supported at character 16;" in message


def test_pipeline_stage_without_space_and_unknown_stage() -> None:
    assert "pipeline stage `| json` is not supported" in _error('{a="b"}|json')
    assert "pipeline stage `| frobnicate` is not supported" in _error('{a="b"} | frobnicate')


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ('{a="b"} | name="x"', "`| name = ...`"),
        ('{a="b"} | status >= 400', "`| status >= ...`"),
        ('{a="b"} | status>400', "`| status > ...`"),
        ('{a="b"} | level=~"err.*"', "`| level =~ ...`"),
        ('{a="b"} | level != "x"', "`| level != ...`"),
        ('{a="b"} | duration <= 10s', "`| duration <= ...`"),
    ],
)
def test_label_filter_expressions(text: str, shown: str) -> None:
    assert f"pipeline stage {shown} (a label filter) is not supported" in _error(text)


@pytest.mark.parametrize("op", ["|>", "!>"])
def test_pattern_filters(op: str) -> None:
    message = _error(f'{{a="b"}} {op} "<_> error <_>"')
    assert f"pattern filter `{op}` is not supported at character 9;" in message


def test_or_in_line_filters() -> None:
    message = _error('{a="b"} |= "a" or "b"')
    assert "`or` between line filter strings is not supported" in message
    assert "at character 16;" in message
    assert "`or` between" in _error('{a="b"} |~ "a" or `b`')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "expected a stream selector {...}, found the end of the query at character 1;"),
        ("foo", "expected a stream selector {...}, found `foo` at character 1;"),
        ('a="b"', 'expected a stream selector {...}, found `a="b"` at character 1;'),
        ('{a="b" c="d"}', 'expected `,` or `}` after a label matcher, found `c="d"}`'),
        ('{a="b",,}', "expected a label name or `}`, found `,}` at character 8;"),
        ('{1a="b"}', 'expected a label name or `}`, found `1a="b"}` at character 2;'),
        ("{a}", "expected =, !=, =~ or !~ after `a`, found `}` at character 3;"),
        ('{a=="b"}', 'expected =, !=, =~ or !~ after `a`, found `=="b"}`'),
        ("{a=b}", "expected a string after `a=`, found `b}` at character 4;"),
        ('{a="b"', "expected `,` or `}` after a label matcher, found the end of the query"),
        ('{a="b"} junk', "expected a line filter, found `junk` at character 9;"),
        ('{a="b"} |= "x" |', "expected a line filter, found `|` at character 16;"),
        ('{a="b"} |=', "expected a string after `|=`, found the end of the query"),
        ('{a="b"} |= ip("1.2.3.4")', 'expected a string after `|=`, found `ip("1.2.3.4")`'),
        ('{a="b"} or {c="d"}', 'expected a line filter, found `or {c="d"}`'),
        ("{a='b'}", "expected a string after `a=`, found `'b'}`"),
    ],
)
def test_syntax_errors(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_long_snippet_is_cut() -> None:
    assert "found `this_is_a_long_ident...` at character 9;" in _error(
        '{a="b"} this_is_a_long_identifier'
    )


# --- limits and bad regexes --------------------------------------------------------------------


def test_query_length_limit() -> None:
    filler = " " * (MAX_QUERY_CHARS - len('{a="b"}'))
    assert parse_query('{a="b"}' + filler).matchers == (Matcher("a", "=", "b"),)
    with pytest.raises(LogQLError, match="query is 16385 characters; the limit is 16384"):
        parse_query('{a="b"}' + filler + " ")


def test_term_limit() -> None:
    matchers = ", ".join(f'l{i}="v"' for i in range(40))
    at_limit = "{" + matchers + "}" + ' |= "x"' * (MAX_TERMS - 40)
    query = parse_query(at_limit)
    assert len(query.matchers) + len(query.filters) == MAX_TERMS
    with pytest.raises(LogQLError, match="more than 64 label matchers and line filters"):
        parse_query(at_limit + ' |= "x"')
    with pytest.raises(LogQLError, match="more than 64"):
        parse_query("{" + ", ".join(f'l{i}="v"' for i in range(65)) + "}")


def test_regex_length_limit() -> None:
    ok = "a" * MAX_REGEX_CHARS
    assert parse_query(f'{{a=~"{ok}"}} |~ "{ok}"').matches({"a": ok}, ok)
    for text in [f'{{a=~"{ok}b"}}', f'{{a!~"{ok}b"}}', f'{{}} |~ "{ok}b"', f'{{}} !~ "{ok}b"']:
        with pytest.raises(LogQLError, match="is 1025 characters; the limit is 1024"):
            parse_query(text)
    assert parse_query(f'{{a="{ok}b"}} |= "{ok}b"')  # plain text is not a regex


@pytest.mark.parametrize(
    ("regex", "reason"),
    [
        ("(", "missing \\)"),
        ("[a", "missing \\]"),
        ("a**", "bad repetition operator"),
        ("(a)\\\\1", "invalid escape sequence"),  # no backreferences in RE2
        ("(?=a)", "invalid perl operator"),  # nor lookaround
        ("a{1001}", "invalid repetition size"),
    ],
)
def test_bad_regexes(regex: str, reason: str) -> None:
    for text in [f'{{a=~"{regex}"}}', f'{{}} |~ "{regex}"']:
        with pytest.raises(LogQLError, match=rf"bad regex '.*': .*{reason}"):
            parse_query(text)


def test_catastrophic_pattern_runs_in_linear_time() -> None:
    # (a+)+$ takes exponential time in a backtracking engine on "aaaa...b"; RE2 is linear.
    assert not LineFilter("|~", "^(a+)+$").matches("a" * 5000 + "b")


# --- selectors alone ---------------------------------------------------------------------------


def test_parse_selector() -> None:
    assert parse_selector('{job="x", level!~"debug|info"}') == (
        Matcher("job", "=", "x"),
        Matcher("level", "!~", "debug|info"),
    )
    assert parse_selector("  {}  ") == ()
    with pytest.raises(LogQLError, match="unexpected text after the stream selector") as e:
        parse_selector('{job="x"} |= "a"')
    assert str(e.value).endswith("; supported: " + SELECTOR_SUPPORTED)
    with pytest.raises(LogQLError, match="a metric query"):
        parse_selector('rate({a="b"}[1m])')


def test_labels_of_selector() -> None:
    assert labels_of_selector('{job="x", level="info"}') == {"job": "x", "level": "info"}
    assert labels_of_selector("{}") == {}
    assert labels_of_selector('{msg="a \\"quoted\\" \\u00e9"}') == {"msg": 'a "quoted" é'}
    with pytest.raises(LogQLError, match=r"`job=~` in a stream's labels"):
        labels_of_selector('{job=~"x"}')
    with pytest.raises(LogQLError, match="`job!=` in a stream's labels"):
        labels_of_selector('{job!="x"}')
    with pytest.raises(LogQLError, match="label `job` is given twice"):
        labels_of_selector('{job="x", job="y"}')
    with pytest.raises(LogQLError, match="unexpected text"):
        labels_of_selector('{job="x"} |= "y"')


# --- times and durations -----------------------------------------------------------------------


def test_parse_time_default() -> None:
    assert parse_time(None, 123) == 123
    assert parse_time("", 456) == 456


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        ("1764817200", 1764817200 * S),  # exactly 10 digits: seconds
        ("0", 0),
        ("-5", -5 * S),
        ("+5", 5 * S),
        ("17648172000", 17648172000),  # 11 digits: nanoseconds
        ("1764817200123456789", 1764817200123456789),
        ("1764817200.5", 1764817200 * S + 500_000_000),
        ("1764817200.123456789", 1764817200123456789),  # exact, no float rounding
        ("1764817200.1234567899", 1764817200123456789),  # past the ns: dropped
        ("1764817200.", 1764817200 * S),
        (".25", 250_000_000),
        ("-1.5", -1_500_000_000),
        ("1.5e9", 1_500_000_000 * S),
        ("2026-12-04T03:00:00Z", _utc_ns(2026, 12, 4, 3, 0, 0)),
        ("2026-12-04T03:00:00.5Z", _utc_ns(2026, 12, 4, 3, 0, 0) + 500_000_000),
        ("2026-12-04T03:00:00.123456Z", _utc_ns(2026, 12, 4, 3, 0, 0) + 123_456_000),
        ("2026-12-04T03:00:00.123456789+01:00", _utc_ns(2026, 12, 4, 2, 0, 0) + 123456789),
        ("2026-12-04T03:00:00.1234567891-05:30", _utc_ns(2026, 12, 4, 8, 30, 0) + 123456789),
        ("1970-01-01T00:00:00Z", 0),
        ("2024-02-29T23:59:59Z", _utc_ns(2024, 2, 29, 23, 59, 59)),
    ],
)
def test_parse_time_formats(value: str, ns: int) -> None:
    assert parse_time(value, -1) == ns


@pytest.mark.parametrize(
    "value",
    [
        "x",
        "now",
        "1e9",  # no ".": not a float for Loki, and not an int
        "1_000",
        " 1",
        "١٢٣",  # Arabic-Indic digits: int() takes them, Loki does not
        "1.2.3",
        "2026-12-04",
        "2026-12-04T03:00:00",  # no offset
        "2026-12-04 03:00:00Z",
        "2026-12-04t03:00:00z",
        "2026-13-04T03:00:00Z",
        "2026-02-30T03:00:00Z",
        "2026-12-04T24:00:00Z",
        "2026-12-04T03:00:60Z",
        "2026-12-04T03:00:00+24:00",
        "2026-12-04T03:00:00.Z",
        "1" * 101,
    ],
)
def test_parse_time_rejects(value: str) -> None:
    with pytest.raises(LogQLError, match=r"is not a time \(expected ns or s since the epoch, or"):
        parse_time(value, 0)


@pytest.mark.parametrize(
    "value", ["9999999999", "99999999999999999999", "1.0e300", "2263-01-01T00:00:00Z"]
)
def test_parse_time_out_of_range(value: str) -> None:
    with pytest.raises(LogQLError, match="is out of range"):
        parse_time(value, 0)


def test_parse_time_message_quotes_the_value() -> None:
    with pytest.raises(LogQLError, match=r"^time 'yesterday' is not a time"):
        parse_time("yesterday", 0)


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        ("500ms", 500_000_000),
        ("1s", S),
        ("5m", 300 * S),
        ("1h30m", 5400 * S),
        ("7d", 7 * 86400 * S),
        ("2w", 14 * 86400 * S),
        ("1y", 365 * 86400 * S),
        ("1y2w3d4h5m6s7ms", ((382 * 24 + 4) * 3600 + 5 * 60 + 6) * S + 7_000_000),
        ("0", 0),
        ("0s", 0),
        ("90", 90 * S),
        ("1.5", 1_500_000_000),
        ("0.000000001", 1),
        ("1e3", 1000 * S),
    ],
)
def test_parse_duration(value: str, ns: int) -> None:
    assert parse_duration(value) == ns


@pytest.mark.parametrize(
    "value", ["", "h", "1x", "1.5h", "30m1h", "1h1h", "1 h", "1H", "-1h", "1ms5s", "1" * 101]
)
def test_parse_duration_rejects(value: str) -> None:
    with pytest.raises(LogQLError, match="is not a duration"):
        parse_duration(value)


def test_parse_duration_negative_and_too_long() -> None:
    with pytest.raises(LogQLError, match="'-1' is negative"):
        parse_duration("-1")
    with pytest.raises(LogQLError, match=r"'-0\.5' is negative"):
        parse_duration("-0.5")
    with pytest.raises(LogQLError, match="too long"):
        parse_duration("300y")
    assert parse_duration("292y") == 292 * 365 * 86400 * S
