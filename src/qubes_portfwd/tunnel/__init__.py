"""The tunnel qube's NAT-PMP lease keeper: holds the VPN provider's public ports for forwards."""
