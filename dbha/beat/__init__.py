"""Signed UDP heartbeats over every path: wire format, path tracking, service."""
