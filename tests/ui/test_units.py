"""The admin page's pure parts: session signing, cross-site rules, chart geometry, formats, CSV defusing."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from edgeproxy.ui import charts, fmt
from edgeproxy.ui.session import SESSION_TTL_S, Session, SessionCodec, cross_site_reason, derive_secret, same_token
from edgeproxy.ui.spend import cell_text

MASTER = "sk-master-unit-0123456789"


def test_a_session_round_trips_and_only_its_own_master_key_reads_it() -> None:
    codec = SessionCodec(MASTER)
    cookie = codec.dump_session(Session("ab" * 32, "csrf-token"))
    assert codec.load_session(cookie) == Session("ab" * 32, "csrf-token")
    assert SessionCodec(MASTER).load_session(cookie) is not None  # another instance or worker agrees
    assert SessionCodec(MASTER + "x").load_session(cookie) is None  # a rotated master key ends sessions
    assert MASTER not in cookie and derive_secret(MASTER) != MASTER.encode()
    for bad in (None, "", "garbage", cookie + "x", cookie.replace(".", "", 1)):
        assert codec.load_session(bad) is None


def test_sessions_expire_after_their_time_to_live() -> None:
    clock = [1_000_000.0]
    codec = SessionCodec(MASTER, clock=lambda: clock[0])
    cookie = codec.dump_session(Session("master", "t"))
    clock[0] += SESSION_TTL_S - 1
    assert codec.load_session(cookie) is not None
    clock[0] += 2
    assert codec.load_session(cookie) is None


def test_a_login_nonce_is_not_a_session() -> None:
    codec = SessionCodec(MASTER)
    nonce_cookie = codec.dump_login("nonce")
    assert codec.load_login(nonce_cookie) == "nonce"
    assert codec.load_session(nonce_cookie) is None  # different salt: one cannot stand in for the other
    assert codec.load_login(codec.dump_session(Session("master", "t"))) is None


@pytest.mark.parametrize(
    ("origin", "fetch_site", "allowed"),
    [
        (None, None, True),  # scripts: they still need the cookie and the token
        ("http://proxy:4000", None, True),
        ("https://proxy:4000", "same-origin", True),  # TLS ended at a reverse proxy in front of us
        (None, "none", True),
        ("http://evil.example", None, False),
        ("http://proxy:4000.evil.example", None, False),
        ("null", None, False),
        ("http://proxy:4000", "cross-site", False),
        (None, "same-site", False),
        ("", None, False),
    ],
)
def test_cross_site_reason(origin: str | None, fetch_site: str | None, allowed: bool) -> None:
    assert (cross_site_reason(origin, fetch_site, "proxy:4000") is None) is allowed


def test_same_token_is_false_for_anything_missing() -> None:
    assert same_token("a", "a") and not same_token("a", "b")
    assert not same_token(None, None) and not same_token("", "") and not same_token("a", None)


def test_axis_steps_are_round_and_whole_for_counts() -> None:
    assert charts.axis_step(0.0252, whole=False) == 0.01
    assert charts.axis_step(1, whole=True) == 1
    assert charts.axis_step(7, whole=True) == 2
    assert charts.axis_step(1234, whole=True) == 500
    assert charts.axis_step(0, whole=False) == 1


def test_stacked_bars_add_up_and_the_biggest_groups_get_colours() -> None:
    start = date(2025, 3, 1)
    rows = [
        {"day": start, "group": "big", "spend": 3.0, "requests": 3, "prompt_tokens": 1, "completion_tokens": 2},
        {"day": start, "group": "small", "spend": 1.0, "requests": 1, "prompt_tokens": 1, "completion_tokens": 0},
        {
            "day": start + timedelta(days=2),
            "group": "tiny",
            "spend": 0.5,
            "requests": 9,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        },
    ]
    chart = charts.stacked_by_day("t", rows, start, start + timedelta(days=2), "spend", lambda r: r["group"], top=2)
    assert chart.total == 4.5
    assert [s.name for s in chart.legend] == ["big", "small", charts.OTHER]
    assert chart.legend[-1].color == charts.OTHER_COLOR
    first_day = [s for s in chart.segments if s.title.startswith("2025-03-01")]
    assert [s.color for s in first_day] == [charts.PALETTE[0], charts.PALETTE[1]]  # biggest at the bottom
    assert first_day[0].y + first_day[0].height == chart.plot_bottom
    assert first_day[1].y + first_day[1].height == pytest.approx(first_day[0].y)
    top_of_axis = chart.y_ticks[-1]
    assert top_of_axis.label == "$4.00" and top_of_axis.y == pytest.approx(12)
    assert first_day[1].y == pytest.approx(12)  # 4 of 4: the first day reaches the top line
    assert len(chart.x_ticks) == 3 and not chart.empty
    empty = charts.stacked_by_day("t", [], start, start, "requests", lambda r: r["group"])
    assert empty.empty and empty.total == 0 and [t.label for t in empty.y_ticks] == ["0", "1"]


def test_budget_share() -> None:
    assert charts.budget_share(5, 10) == 0.5
    assert charts.budget_share(15, 10) == 1.0
    assert charts.budget_share(1, None) is None
    assert charts.budget_share(0, 0) == 1.0  # a zero budget is spent
    assert charts.budget_share(None, 10) == 0.0


def test_formats() -> None:
    assert [fmt.usd(v) for v in (0, 0.5, 0.0429, 0.000123, 1.5, 1234)] == [
        "$0",
        "$0.50",
        "$0.0429",
        "$0.000123",
        "$1.50",
        "$1,234",
    ]
    assert fmt.number(12_345) == "12.3k" and fmt.number(999) == "999" and fmt.percent(0.125) == "12.5%"
    assert fmt.moment("2025-01-02T03:04:05+00:00") == "2025-01-02 03:04 UTC" and fmt.moment(None) == "—"
    assert fmt.models([]) == "all models" and fmt.seconds(0.25) == "250 ms"


def test_csv_cells_that_a_spreadsheet_would_run_are_defused() -> None:
    assert cell_text("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert cell_text("@SUM(A1)") == "'@SUM(A1)" and cell_text("-1+1") == "'-1+1"
    assert cell_text("ci-runner") == "ci-runner" and cell_text(0.5) == 0.5
