"""``make demo``: the whole flow on one machine, without a cluster (see ``demo/run_demo.py``)."""
