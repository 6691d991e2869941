"""libnftables counting its listings of Qubes' custom chains: imported by the lab tests'
child processes, which run the agent's pieces inside a namespace of the test's own."""

from qubes_portfwd.agent.nft_library import NftLibrary
from qubes_portfwd.agent.nft_port import NftResult


class CountingNft(NftLibrary):
    listings = 0

    async def list_custom_chains_json(self) -> NftResult:
        self.listings += 1
        return await super().list_custom_chains_json()
