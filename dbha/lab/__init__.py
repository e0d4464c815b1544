"""The network-namespace lab: real hosts, real databases, real VIPs on one machine.

Used by the CLI (``dbha lab ...``) and by the tests; nothing else imports it.
"""
