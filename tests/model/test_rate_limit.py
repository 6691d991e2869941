"""Per-client shares (pure, the time passed in): a token bucket of new requests and a cap of
requests under way, each client's own."""

from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.model.rate_limit import ClientLimiter, Limit, RateLimit

RATE = RateLimit(burst=4, per_second=2)


def test_a_burst_then_the_refill_rate() -> None:
    limiter: ClientLimiter[str] = ClientLimiter(RATE, in_flight=100)
    for _ in range(4):
        assert limiter.start("personal", 10.0) is None
        limiter.finish("personal")
    refusal = limiter.start("personal", 10.0)
    assert refusal is not None and refusal.limit == Limit.RATE
    assert refusal.retry_after == 0.5  # one token at 2 per second
    assert limiter.start("personal", 10.25) is not None  # half a token is not one
    assert limiter.start("personal", 10.5) is None


def test_one_client_over_its_share_leaves_the_others_theirs() -> None:
    limiter: ClientLimiter[str] = ClientLimiter(RATE, in_flight=2)
    assert limiter.start("personal", 0.0) is None
    assert limiter.start("personal", 0.0) is None
    refusal = limiter.start("personal", 0.0)
    assert refusal is not None and refusal.limit == Limit.IN_FLIGHT
    assert limiter.start("work", 0.0) is None
    limiter.finish("personal")
    assert limiter.start("personal", 0.0) is None  # a place given back is a place again


def test_a_refused_request_costs_nothing_and_a_clock_stepping_back_refills_nothing() -> None:
    limiter: ClientLimiter[str] = ClientLimiter(RATE, in_flight=1)
    assert limiter.start("work", 100.0) is None
    assert limiter.start("work", 100.0) is not None  # in flight: refused, no token taken
    limiter.finish("work")
    for _ in range(3):
        assert limiter.start("work", 50.0) is None  # back in time: the 3 tokens left
        limiter.finish("work")
    assert limiter.start("work", 50.0) is not None


def test_idle_clients_are_forgotten_when_the_table_is_full() -> None:
    limiter: ClientLimiter[int] = ClientLimiter(RATE, in_flight=1, max_keys=3)
    for client in range(3):
        assert limiter.start(client, 0.0) is None
        limiter.finish(client)
    assert limiter.tracked == 3
    assert limiter.start(99, 100.0) is None  # the others are full again: dropped
    assert limiter.tracked == 1
    assert limiter.start(0, 100.0) is None  # and start afresh


@given(st.lists(st.tuples(st.sampled_from("ab"), st.floats(0, 5), st.booleans()), max_size=60))
def test_never_more_than_the_burst_plus_the_refill(steps: list[tuple[str, float, bool]]) -> None:
    limiter: ClientLimiter[str] = ClientLimiter(RATE, in_flight=1000)
    now, admitted = 0.0, {"a": 0, "b": 0}
    for client, step, finish in steps:
        now += step
        if limiter.start(client, now) is None:
            admitted[client] += 1
            if finish:
                limiter.finish(client)
    for count in admitted.values():
        assert count <= RATE.burst + now * RATE.per_second
