"""When the listing of Qubes' custom chains may be kept past a load of ours: only from the
generation it was taken at, to a generation the load left with nobody else's commit between
(the kernel's generation is stood in for here; the lab test runs it against the kernel)."""

import asyncio

import pytest

from qubes_portfwd.agent import custom_chains
from qubes_portfwd.agent.custom_chains import CustomChains
from qubes_portfwd.agent.nft_port import NftResult


class Listings:
    def __init__(self) -> None:
        self.count = 0

    async def list_custom_chains_json(self) -> NftResult:
        self.count += 1
        return NftResult(True, f"listing {self.count}")


@pytest.fixture
def generation(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    now: list[int | None] = [5]
    monkeypatch.setattr(custom_chains, "_generation", lambda: now[0])
    return now


def _listed(chains: CustomChains) -> str:
    return asyncio.run(chains.listing()).output


@pytest.mark.parametrize(
    ("since", "to", "kept"),
    [
        (5, 6, True),  # our load alone, from the listing's generation
        (5, None, False),  # someone else committed around our load
        (4, 6, False),  # someone committed between the listing and our load
        (None, 6, False),  # the generation could not be read before the load
    ],
)
def test_a_listing_is_kept_only_across_a_load_of_ours_alone(
    generation: list[int | None], since: int | None, to: int | None, kept: bool
) -> None:
    runner = Listings()
    chains = CustomChains(runner)  # type: ignore[arg-type]
    assert _listed(chains) == "listing 1"
    assert chains.carry_over(since, to) is kept
    generation[0] = 6
    assert _listed(chains) == ("listing 1" if kept else "listing 2")


def test_a_listing_is_carried_once_and_not_after_a_fresh_list(
    generation: list[int | None],
) -> None:
    runner = Listings()
    chains = CustomChains(runner)  # type: ignore[arg-type]
    _listed(chains)
    assert chains.carry_over(5, 6)
    assert not chains.carry_over(5, 6)  # the listing used was handed over already
    asyncio.run(chains.list_ahead())  # listed at 5: what the last apply used no longer counts
    assert not chains.carry_over(5, 6)


def test_a_listing_taken_while_someone_committed_is_not_carried(
    generation: list[int | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    readings = iter([5, 6])  # before and after the listing: a transaction came between
    monkeypatch.setattr(custom_chains, "_generation", lambda: next(readings))
    chains = CustomChains(Listings())  # type: ignore[arg-type]
    _listed(chains)
    assert not chains.carry_over(5, 7)
