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
