"""The Qt front end: firewall tab with port forwarding, overview, and the NAT prompt."""
