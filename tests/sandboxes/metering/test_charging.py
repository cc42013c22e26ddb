"""The arithmetic of charging: slicing a run into intervals never gains or loses a credit-second."""

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from sandboxes.metering.charging import charge_key, intervals_due, owed, slot_start

T0 = dt.datetime(2026, 11, 26, 10, 0, 3, 250_000, tzinfo=dt.UTC)


def test_a_run_is_charged_its_rate_times_its_allocated_milliseconds():
    end = T0 + dt.timedelta(seconds=25, milliseconds=500)
    parts = list(
        intervals_due(
            rate_millicredits=2000,
            interval_seconds=10,
            started_at=T0,
            charged_until=T0,
            ended_at=end,
            now=end,
        )
    )
    assert [p.start.second for p in parts] == [0, 10, 20]
    assert [p.milliseconds for p in parts] == [6750, 10000, 8750]
    assert sum(p.due for p in parts) == 51 == owed(rate_millicredits=2000, started_at=T0, until=end)


def test_an_open_run_is_charged_only_for_slots_that_are_over():
    now = T0 + dt.timedelta(seconds=19)  # 10:00:22.25: the slot 10:00:20 is not over
    parts = list(
        intervals_due(
            rate_millicredits=1000,
            interval_seconds=10,
            started_at=T0,
            charged_until=T0,
            ended_at=None,
            now=now,
        )
    )
    assert [p.ends for p in parts] == [
        T0.replace(second=10, microsecond=0),
        T0.replace(second=20, microsecond=0),
    ]


@given(
    rate=st.integers(min_value=1, max_value=64_000),
    interval=st.sampled_from([1, 2, 5, 10, 60]),
    length_ms=st.integers(min_value=0, max_value=3_600_000),
    cuts=st.lists(st.integers(min_value=0, max_value=3_600_000), max_size=8),
)
def test_however_a_run_is_ticked_its_charges_add_up_and_keys_agree(rate, interval, length_ms, cuts):
    """Ticks at arbitrary moments, then the end: every slot is charged once, under the same key
    and amount as a single pass would give, and the total is exactly owed(end)."""
    end = T0 + dt.timedelta(milliseconds=length_ms)
    charged_until, seen = T0, {}
    for cut in sorted(c for c in cuts if c <= length_ms):
        now = T0 + dt.timedelta(milliseconds=cut)
        for part in intervals_due(
            rate_millicredits=rate,
            interval_seconds=interval,
            started_at=T0,
            charged_until=charged_until,
            ended_at=None,
            now=now,
        ):
            assert part.start not in seen
            seen[part.start] = part.due
            charged_until = part.ends
    for part in intervals_due(
        rate_millicredits=rate,
        interval_seconds=interval,
        started_at=T0,
        charged_until=charged_until,
        ended_at=end,
        now=end,
    ):
        assert part.start not in seen
        seen[part.start] = part.due
    assert sum(seen.values()) == owed(rate_millicredits=rate, started_at=T0, until=end)
    single = {
        p.start: p.due
        for p in intervals_due(
            rate_millicredits=rate,
            interval_seconds=interval,
            started_at=T0,
            charged_until=T0,
            ended_at=end,
            now=end,
        )
    }
    assert seen == single


def test_slots_and_keys_are_on_a_grid_from_the_epoch():
    assert slot_start(T0, 10) == T0.replace(second=0, microsecond=0)
    assert charge_key("r", T0.replace(second=0, microsecond=0)) == f"usage:r:{1795687200}"
