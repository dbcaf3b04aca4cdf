"""Redaction measurement: labelled corpora (the project's own regression set and an independent one built from
presidio-evaluator's public templates) and the benchmark against stock Presidio that `scripts/bench --redaction` runs.
"""
