"""Capture scripts (the ``actions`` option): parsing without a browser, running with one.

The page of the running tests has one box per step kind, red until the step did what
it should (the page's own listeners turn it green), so every step is proven by the
pixels of the final image; ``screenshot`` steps by the extra images, ``goto`` by the
image of the page it went to. Failures carry the step's index and kind.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from bulk._actions import ACTIONS_JSON_SCHEMA, Action, parse_actions
from bulk._capture import BrowserPool, PoolConfig, Screenshot
from bulk._exceptions import ActionFailed, BulkError, URLBlocked, ValidationError
from bulk._options import CaptureOptions, parse_actions_arg
from bulk._policy import EgressPolicy
from tests.conftest import run_bulk
from tests.sitekit import Route, SiteServer

POLICY = EgressPolicy(allow=("127.0.0.1/32",))

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)

# -- parsing (no browser) -------------------------------------------------------------

EVERY_KIND: list[dict[str, Any]] = [
    {"click": "#b"},
    {"hover": "#h"},
    {"type": {"selector": "#q", "text": "shoes"}},
    {"select": {"selector": "#s", "value": "b"}},
    {"check": "#c"},
    {"uncheck": "#u"},
    {"press": "Enter"},
    {"press": {"key": "a", "selector": "#q"}},
    {"scroll": "#far"},
    {"scroll": 1200},
    {"evaluate": "document.title = 'x'"},
    {"css": "body { color: red }"},
    {"goto": "https://example.org/next"},
    {"wait": 500},
    {"wait_for_selector": "#late"},
    {"screenshot": {"name": "after"}},
]


def test_every_kind_parses_and_writes_back_the_same() -> None:
    steps = parse_actions(EVERY_KIND)
    assert [s.kind for s in steps] == [next(iter(item)) for item in EVERY_KIND]
    again = parse_actions([s.to_json() for s in steps])
    assert again == steps


@pytest.mark.parametrize(
    ("script", "field"),
    [
        ({"click": "#b"}, "actions"),
        ([{"click": "#b", "hover": "#h"}], "actions[0]"),
        ([{"tap": "#b"}], "actions[0]"),
        ([{"click": "#b"}, {"click": ""}], "actions[1].click"),
        ([{"type": {"selector": "#q"}}], "actions[0].type"),
        ([{"type": {"selector": "#q", "text": "a", "delay": 1}}], "actions[0].type"),
        ([{"wait": 1.5}], "actions[0].wait"),
        ([{"wait": 30001}], "actions[0].wait"),
        ([{"scroll": -1}], "actions[0].scroll"),
        ([{"goto": "file:///etc/passwd"}], "actions[0].goto"),
        ([{"goto": "javascript:alert(1)"}], "actions[0].goto"),
        ([{"screenshot": "a"}, {"screenshot": {"name": "a"}}], "actions[1].screenshot.name"),
        ([{"screenshot": "../x"}], "actions[0].screenshot.name"),
        ([{"evaluate": "a\x00b"}], "actions[0].evaluate"),
        ([{"wait": 1}] * 51, "actions"),
        ([{"screenshot": f"s{i}"} for i in range(11)], "actions"),
    ],
)
def test_bad_scripts_are_refused_with_the_step_named(script: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_actions(script)
    assert info.value.details["field"] == field


def test_options_carry_the_script_and_mask_typed_text() -> None:
    opts = CaptureOptions.from_mapping(
        {"actions": [{"type": {"selector": "#p", "text": "secret"}}, {"goto": "https://a.test/"}]}
    )
    assert opts.actions == (
        Action(kind="type", selector="#p", text="secret"),
        Action(kind="goto", url="https://a.test/"),
    )
    assert opts.goto_urls == ("https://a.test/",)
    assert "secret" not in json.dumps(opts.public_json())
    with pytest.raises(ValidationError):
        CaptureOptions.from_mapping({"actions": [{"goto": "ftp://a.test/"}]})


def test_cli_reads_a_script_from_a_file(tmp_path: Any) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps([{"click": "#b"}, {"wait": 10}]))
    assert parse_actions_arg("@" + str(path)) == (
        Action(kind="click", selector="#b"),
        Action(kind="wait", ms=10),
    )
    with pytest.raises(ValidationError):
        parse_actions_arg("[{")
    with pytest.raises(ValidationError):
        parse_actions_arg("@" + str(tmp_path / "missing.json"))


def test_the_json_schema_names_every_kind() -> None:
    kinds = {next(iter(s["properties"])) for s in ACTIONS_JSON_SCHEMA["items"]["oneOf"]}
    assert kinds == {next(iter(item)) for item in EVERY_KIND}


# -- running (real Chromium) ----------------------------------------------------------

BOXES = (
    "click", "hover", "type", "select", "check", "uncheck", "press", "keyin",
    "scroll", "scrollto", "evaluate", "css", "wait", "late",
)  # fmt: skip

PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><style>"
    "html,body{margin:0;padding:0;background:#fff} body{height:4000px}"
    ".box{position:fixed;width:40px;height:40px;background:rgb(255,0,0)}"
    ".box.ok{background:rgb(0,255,0)}"
    "#controls{position:fixed;left:0;top:100px}"
    "</style></head><body>"
    + "".join(
        f'<div class=box id="box-{name}" style="left:{i * 45}px;top:0"></div>'
        for i, name in enumerate(BOXES)
    )
    + '<div id=controls><button id=b>b</button><span id=h>hover me</span>'
    '<input id=q><select id=s><option value=a>A</option><option value=b>B</option></select>'
    '<input type=checkbox id=c><input type=checkbox id=u checked></div>'
    '<div id=far style="position:absolute;top:3000px">far</div>'
    "<script>"
    "const ok = (n) => document.getElementById('box-' + n).classList.add('ok');"
    "document.getElementById('b').onclick = () => {"
    "  ok('click'); setTimeout(() => { const d = document.createElement('i');"
    "  d.id = 'late'; d.textContent = 'late'; document.body.append(d); }, 300); };"
    "document.getElementById('h').onmouseenter = () => ok('hover');"
    "document.getElementById('q').oninput = (e) => {"
    "  if (e.target.value === 'shoes') ok('type'); if (e.target.value === 'shoesX') ok('keyin'); };"
    "document.getElementById('s').onchange = (e) => { if (e.target.value === 'b') ok('select'); };"
    "document.getElementById('c').onchange = (e) => { if (e.target.checked) ok('check'); };"
    "document.getElementById('u').onchange = (e) => { if (!e.target.checked) ok('uncheck'); };"
    "document.addEventListener('keydown', (e) => { if (e.key === 'Enter') ok('press'); });"
    "window.addEventListener('scroll', () => {"
    "  if (scrollY >= 2000) ok('scroll'); if (scrollY === 1200) ok('scrollto'); });"
    "</script></body></html>"
)

OTHER = "<!doctype html><body style='margin:0;background:rgb(0,0,255)'>other</body>"


def color(data: bytes, x: int, y: int) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(data)) as img:
        pixel = img.convert("RGB").getpixel((x, y))
    assert isinstance(pixel, tuple)
    return (pixel[0], pixel[1], pixel[2])


def near(got: tuple[int, ...], want: tuple[int, int, int], tol: int = 24) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(got[:3], want, strict=True))


@pytest.fixture
def site() -> Iterator[SiteServer]:
    with SiteServer() as server:
        server.routes["/"] = Route(body=PAGE)
        server.routes["/other"] = Route(body=OTHER)
        yield server


SCRIPT: list[dict[str, Any]] = [
    {"screenshot": "before"},
    {"click": "#b"},
    {"hover": "#h"},
    {"type": {"selector": "#q", "text": "shoes"}},
    {"press": {"key": "X", "selector": "#q"}},
    {"select": {"selector": "#s", "value": "b"}},
    {"check": "#c"},
    {"uncheck": "#u"},
    {"press": "Enter"},
    {"scroll": "#far"},
    {"scroll": 1200},
    {"evaluate": "ok('evaluate'); window.t0 = performance.now()"},
    {"wait": 400},
    {"evaluate": "if (performance.now() - window.t0 >= 400) ok('wait')"},
    {"wait_for_selector": "#late"},
    {"evaluate": "if (document.getElementById('late')) ok('late')"},
    {"css": "#box-css { background: rgb(0,255,0) }"},
    {"screenshot": {"name": "all-done"}},
]


@pytest.mark.browser
async def test_every_step_kind_changes_what_is_captured(
    chromium: str, site: SiteServer
) -> None:
    script = [*SCRIPT, {"goto": site.url("/other")}]
    opts = CaptureOptions(actions=parse_actions(script))
    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=1), POLICY) as pool:
        shot = await pool.capture(site.url("/"), opts)
    assert [s.name for s in shot.shots] == ["before", "all-done"]
    before, done = shot.shots
    for i, name in enumerate(BOXES):
        assert near(color(before.data, i * 45 + 20, 20), RED), name
        assert near(color(done.data, i * 45 + 20, 20), GREEN), name
    assert (done.width, done.height) == (1280, 800)
    # The final image is of the page goto went to.
    assert near(color(shot.data, 600, 400), BLUE)
    assert shot.final_url == site.url("/other")
    assert len(site.hits("/other")) == 1


async def failing(pool: BrowserPool, url: str, script: list[dict[str, Any]]) -> BulkError:
    opts = CaptureOptions(actions=parse_actions(script), timeout=6000)
    try:
        shot: Screenshot = await pool.capture(url, opts)
    except BulkError as exc:
        return exc
    raise AssertionError(f"captured {shot.final_url}")


@pytest.mark.browser
async def test_a_failing_step_names_its_index_and_goto_passes_the_policy(
    chromium: str, site: SiteServer
) -> None:
    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=1), POLICY) as pool:
        missing = await failing(pool, site.url("/"), [{"wait": 1}, {"click": "#nope"}])
        thrown = await failing(pool, site.url("/"), [{"evaluate": "throw new Error('boom')"}])
        bad_css = await failing(pool, site.url("/"), [{"click": "a[["}])
        blocked = await failing(pool, site.url("/"), [{"goto": "http://127.0.0.2:8080/"}])
        unsafe = await failing(pool, site.url("/"), [{"wait": 0}, {"goto": "http://127.0.0.1:9/"}])
    assert isinstance(missing, ActionFailed)
    assert missing.details["step"] == 1 and missing.details["action"] == "click"
    assert "step 1 (click)" in missing.message
    assert isinstance(thrown, ActionFailed) and thrown.details["step"] == 0
    assert "boom" in thrown.details["reason"]
    assert bad_css.code == "CAPTURE_ERROR" and bad_css.details["field"] == "actions[0].click"
    assert isinstance(blocked, URLBlocked)
    assert isinstance(unsafe, ActionFailed) and unsafe.details["step"] == 1
    assert unsafe.details["net_error"] == "ERR_UNSAFE_PORT"
    assert "refuses to connect to this port" in unsafe.message


@pytest.mark.browser
def test_bulk_shot_writes_the_script_pictures_next_to_the_image(
    site: SiteServer, tmp_path: Any
) -> None:
    out = tmp_path / "page.png"
    script = json.dumps([{"screenshot": "before"}, {"click": "#b"}, {"screenshot": "after"}])
    result = run_bulk("shot", site.url("/"), "-o", out, "--allow-private", "--actions", script)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["shots"]] == ["before", "after"]
    before = (tmp_path / "page.before.png").read_bytes()
    after = (tmp_path / "page.after.png").read_bytes()
    assert near(color(before, 20, 20), RED) and near(color(after, 20, 20), GREEN)
    assert out.is_file() and report["load"] == "complete"
    # goto passes the address policy before anything runs.
    goto = json.dumps([{"goto": "http://127.0.0.2:8080/"}])
    loads = len(site.hits("/"))
    refused = run_bulk(
        "shot", site.url("/"), "-o", tmp_path / "no.png", "--allow", "127.0.0.1/32",
        "--actions", goto,
    )  # fmt: skip
    assert refused.code != 0 and "URL_BLOCKED" in refused.stderr
    assert "127.0.0.2" in refused.stderr and not (tmp_path / "no.png").exists()
    assert len(site.hits("/")) == loads  # refused before the page was loaded
    # A bad script is refused before anything runs.
    bad = run_bulk("shot", site.url("/"), "-o", out, "--actions", '[{"tap": "#b"}]')
    assert bad.code == 2 and "actions[0]" in bad.stderr
