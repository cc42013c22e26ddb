"""The consumer's per-connection limits, on a clock the test moves."""

from sandboxes.live.limits import SlidingWindow, TokenBucket


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_refuses_an_eleventh_frame_within_any_second():
    clock = Clock()
    window = SlidingWindow(limit=10, seconds=1.0, clock=clock)
    assert all(window.allow() for _ in range(10))
    clock.now += 0.1
    assert not window.allow()  # a bucket refilling 10/s would have let this one through

    clock = Clock()
    window = SlidingWindow(limit=10, seconds=1.0, clock=clock)
    for _ in range(10):  # steady 10 a second is fine, for as long as it lasts
        assert window.allow()
        clock.now += 0.1
    for _ in range(30):
        assert window.allow()
        clock.now += 0.1


def test_the_bucket_allows_a_burst_then_its_rate():
    clock = Clock()
    bucket = TokenBucket(capacity=3, per_second=2, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5  # one token back
    assert [bucket.take() for _ in range(2)] == [True, False]
    clock.now += 60  # never more than the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
