"""Fixtures of the nft tests."""

from .lab import make_netns

__all__ = ["make_netns"]
