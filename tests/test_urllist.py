"""URL-list input checked as a whole (``bulk._urllist``): pure, no I/O."""

from __future__ import annotations

import pytest

from bulk._exceptions import ValidationError
from bulk._options import CaptureOptions
from bulk._policy import EgressPolicy
from bulk._urllist import RawItem, parse_url_lines, prepare_url_list, raw_items

POLICY = EgressPolicy()
BASE = CaptureOptions()


def test_repeats_are_dropped_after_normalisation() -> None:
    items = raw_items(
        [
            "https://example.com/a",
            "HTTPS://EXAMPLE.com/a#top",
            {"url": "https://example.com/b", "options": {"fullPage": True}},
            {"url": "https://example.com/b", "options": {"full_page": True}},
            "https://example.com/c",
        ]
    )
    listed = prepare_url_list(items, BASE, POLICY)
    assert [i.url for i in listed.items] == [
        "https://example.com/a",
        "https://example.com/b",
        "https://example.com/c",
    ]
    assert (listed.given, listed.deduplicated) == (5, 2)
    assert listed.items[1].override == {"full_page": True}
    assert listed.items[0].override is None and listed.items[1].options.full_page


def test_every_bad_item_is_named_and_nothing_is_kept() -> None:
    items = raw_items(
        [
            "https://example.com/",
            "http://10.0.0.1/admin",
            "not a url",
            {"url": "https://example.com/x", "options": {"width": 5}},
            {"url": "https://example.com/", "options": {"width": 800}},
            {"url": "https://example.com/y", "options": {"nope": 1}},
            42,
        ]
    )
    with pytest.raises(ValidationError) as info:
        prepare_url_list(items, BASE, POLICY)
    details = info.value.details
    assert isinstance(details, dict)
    assert details["bad_items"] == 6
    assert [(e["index"], e["field"], e["code"]) for e in details["errors"]] == [
        (1, "urls[1]", "URL_BLOCKED"),
        (2, "urls[2]", "INVALID_URL"),
        (3, "urls[3].options.width", "VALIDATION_ERROR"),
        (4, "urls[4]", "VALIDATION_ERROR"),
        (5, "urls[5].options.nope", "VALIDATION_ERROR"),
        (6, "urls[6]", "VALIDATION_ERROR"),
    ]
    assert "repeats item 0" in details["errors"][3]["message"]


def test_caps() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        prepare_url_list([], BASE, POLICY)
    with pytest.raises(ValidationError, match="3 items; at most 2"):
        prepare_url_list([RawItem("https://example.com/")] * 3, BASE, POLICY, limit=2)
    with pytest.raises(ValidationError, match="must be an array"):
        raw_items("https://example.com/")


def test_lines_and_json_lines() -> None:
    lines = [
        "# a comment",
        "https://example.com/a",
        "",
        '"https://example.com/b"',
        '{"url": "https://example.com/c", "options": {"width": 400}}',
    ]
    items = parse_url_lines(lines, "list.txt")
    assert [(i.url, i.line) for i in items] == [
        ("https://example.com/a", 2),
        ("https://example.com/b", 4),
        ("https://example.com/c", 5),
    ]
    with pytest.raises(ValidationError, match=r"list.txt:1: not valid JSON"):
        parse_url_lines(["{nope"], "list.txt")
    bad = parse_url_lines(["ftp://x/", '{"url": "https://example.com/", "extra": 1}'], "f")
    with pytest.raises(ValidationError) as info:
        prepare_url_list(bad, BASE, POLICY, field="f")
    assert isinstance(info.value.details, dict)
    assert [e["field"] for e in info.value.details["errors"]] == ["f:1", "f:2"]


def test_a_urls_own_options_are_masked_in_the_manifest() -> None:
    from bulk._jobs import _masked

    shown = _masked(
        {
            "width": 400,
            "cookies": [{"name": "s", "value": "secret"}],
            "headers": {"X-Token": "secret"},
            "actions": [{"type": {"selector": "#pw", "text": "secret"}}, {"click": "#go"}],
        }
    )
    assert "secret" not in repr(shown)
    assert shown["width"] == 400 and shown["actions"][1] == {"click": "#go"}
    assert shown["actions"][0] == {"type": {"selector": "#pw", "text": "***"}}
