"""What the notebooks call, so that each of their cells stays one call.

Needs the ``notebooks`` extra (ipywidgets, pandas); this file imports nothing:

- ``targets``: which environment a notebook talks to (``connect``), one guide step's checks.
- ``check_tables``: the check results as tables (notebook 01).
- ``panel``: the interactive generation panel (notebook 02).
"""
