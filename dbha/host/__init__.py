"""The host's network: the VIP, gratuitous ARP, addresses, the safety check."""
