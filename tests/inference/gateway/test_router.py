"""The router: least outstanding requests per replica in this process, ties at random, never a
replica already tried for the same request."""

from dataclasses import dataclass

from inference.gateway.router import Router


@dataclass(frozen=True)
class FakeTarget:
    replica_id: int
    base_url: str = "http://127.0.0.1:1/v1"
    api_key: str = ""


def test_the_least_loaded_replica_is_chosen():
    # given three replicas, two of them busy
    router = Router()
    a, b, c = FakeTarget(1), FakeTarget(2), FakeTarget(3)
    router.take(a)
    router.take(a)
    router.take(c)
    # when a request is routed, then it goes to the idle one, every time
    assert {router.choose([a, b, c], tried=set()).replica_id for _ in range(50)} == {2}


def test_ties_are_spread_over_the_replicas():
    router = Router()
    targets = [FakeTarget(1), FakeTarget(2), FakeTarget(3)]
    chosen = {router.choose(targets, tried=set()).replica_id for _ in range(200)}
    assert chosen == {1, 2, 3}


def test_a_replica_already_tried_is_skipped_and_none_is_left_after_all():
    router = Router()
    a, b = FakeTarget(1), FakeTarget(2)
    router.take(b)  # b is busier, but a was tried
    assert router.choose([a, b], tried={1}) == b
    assert router.choose([a, b], tried={1, 2}) is None
    assert router.choose([], tried=set()) is None


def test_counts_are_given_back_even_when_the_request_fails():
    router = Router()
    a = FakeTarget(1)
    try:
        with router.outstanding_on(a):
            assert router.outstanding[1] == 1
            raise RuntimeError("the engine failed")
    except RuntimeError:
        pass
    assert router.outstanding[1] == 0
    assert 1 not in router.outstanding  # no key left behind per replica ever seen


def test_spreading_many_requests_keeps_the_counts_level():
    # given 4 replicas and 40 requests that stay outstanding
    router = Router()
    targets = [FakeTarget(i) for i in range(4)]
    for _ in range(40):
        router.take(router.choose(targets, tried=set()))
    # then each replica holds exactly 10
    assert [router.outstanding[i] for i in range(4)] == [10, 10, 10, 10]
