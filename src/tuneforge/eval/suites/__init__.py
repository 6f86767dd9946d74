"""Bundled evaluation data, read with ``importlib.resources``.

* ``bias_probes.yaml``: counterfactual probe groups (:mod:`tuneforge.eval.bias`).
* ``red_team.jsonl``: requests a safe model declines (:mod:`tuneforge.eval.safety`).
* ``general_en.txt``: general passages for the retention suite (:mod:`tuneforge.eval.retention`).

Users extend each with files of the same format, named in the eval config.
"""
