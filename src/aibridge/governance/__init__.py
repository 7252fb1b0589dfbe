"""Governance: what requests may do and what they cost.

- :mod:`aibridge.governance.prices`: the price table and exact cost arithmetic;
- the limiter (model access, concurrency, request and token rates, budgets by
  reservation) with an in-process and a Redis store.

Below the pipeline and the recorder (both use it), above the store.
"""
