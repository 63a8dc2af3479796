"""The backfill page's rate chart: a rate of work per interval between batches, a gap where it paused."""

from migrations_ui.models import Backfill


def test_it_leaves_a_gap_where_the_backfill_paused_instead_of_a_rate_near_zero():
    # Batches every 0.1 s, then a 3 s pause, then batches again.
    backfill = Backfill(rate_samples=[[100.0, 0], [100.1, 500], [100.2, 1000], [103.2, 1500], [103.3, 2000]])

    rates = backfill.rates()

    assert [t for t, _ in rates] == [100.1, 100.2, 101.7, 103.3]
    assert [None if r is None else round(r) for _, r in rates] == [5000, 5000, None, 5000]


def test_it_has_no_rate_before_two_samples():
    assert Backfill(rate_samples=[[100.0, 0]]).rates() == [] and Backfill(rate_samples=None).rates() == []


def _recorded(backfill, at_s, rows, **kwargs):
    backfill.rate_samples = backfill.with_sample(at_s, rows, **kwargs)


def test_it_keeps_a_long_backfills_whole_history_evenly_in_at_most_rate_samples_points():
    # Two hours of records every 0.5 s at 1,000 rows/s, with a 10-minute pause after the first hour
    # (the resumed attempt starting with a point of its own).
    backfill, rows = Backfill(rate_samples=[]), 0
    _recorded(backfill, 0.0, 0, new_point=True)
    for step in range(1, 7200 * 2 + 1):
        at_s = step * 0.5 + (600 if step > 7200 else 0)
        if step == 7201:
            _recorded(backfill, 3600 + 600, rows, new_point=True)
        rows += 500
        _recorded(backfill, at_s, rows)
    samples = backfill.rate_samples
    assert len(samples) <= Backfill.RATE_SAMPLES
    assert samples[0] == [0.0, 0] and samples[-1] == [7800.0, 7_200_000], "from the first record to the last"
    rates = backfill.rates()
    gaps = [t for t, rate in rates if rate is None]
    assert len(gaps) == 1 and 3600 < gaps[0] < 4200, f"one gap, the pause: {gaps}"
    assert all(round(rate) == 1000 for _, rate in rates if rate is not None)
    intervals = sorted(b[0] - a[0] for a, b in zip(samples, samples[1:]))
    assert intervals[len(intervals) // 10] > 10 and intervals[-2] < 50, "evenly spaced, a few seconds each"


def test_it_keeps_every_record_of_a_short_backfill():
    backfill = Backfill(rate_samples=[])
    for step in range(40):
        _recorded(backfill, step * 0.5, step * 100)
    assert backfill.rate_samples == [[step * 0.5, step * 100] for step in range(40)]
