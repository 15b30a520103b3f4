"""The embedded default: real servers that stand in for the cloud services, offline.

Production code never imports this package; only the CLI's ``dev``/``demo`` commands,
``tripkit.jupyter.targets.connect("local")`` (which starts a stack in the kernel when none is
running) and the tests do, each lazily.
"""
