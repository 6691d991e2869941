"""NAT-PMP (RFC 6886): the wire codec shared by the tunnel qube's client and the servers."""
