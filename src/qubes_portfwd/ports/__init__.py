"""Ports: what the product needs of its platform, one adapter per platform (DESIGN.md §6)."""
