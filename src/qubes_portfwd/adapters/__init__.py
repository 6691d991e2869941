"""Adapters of the product's ports to a stock Qubes host, chosen at the composition roots."""
