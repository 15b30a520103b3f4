"""The embedded default: real servers that stand in for the cloud services, offline.

Production code never imports this package; only the CLI's ``dev``/``demo`` commands and
the tests do.
"""
