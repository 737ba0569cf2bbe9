"""`mpcli report`: a run directory drawn as one self-contained HTML page.

data.py reads the run (metrics.jsonl, config.yaml, timeline/rank_<N>.json), timing.py lines up one
pipeline step across ranks, plots.py draws with matplotlib (the optional `report` extra) and page.py
writes the HTML. Only plots.py imports matplotlib.
"""
