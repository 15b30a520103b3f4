"""The usage report: what the generations cost against the plans' free tiers.

Everything here but :mod:`~tripkit.usage.plans` needs the ``notebooks`` extra (pandas,
matplotlib, papermill); this file imports nothing, so ``tripkit check`` reads the plans
without it. Which module to open:

- ``plans``: the limits and prices (``tripkit/data/plan_limits.json``); no pandas.
- ``history``: run records as a table; the CSV history; the harvest from Redis.
- ``costs``: what the observed generations cost, per generation and per period.
- ``projections``: a month at a volume against each plan: the free-tier fit, the cost.
- ``render``: how tables, charts and numbers look in Jupyter and the HTML.
- ``report``: the report's content, one table, chart or note per notebook cell.
- ``build``: ``build_report``: the notebook's parameters, the data gathered, a report.
- ``runner``: ``tripkit report``: notebook 03 through papermill, then HTML.
"""
