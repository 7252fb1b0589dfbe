"""Interceptors for the bridged APIs, and the side-channel parsing they share.

``sse`` (incremental SSE parsing/encoding), ``observations`` (the extracted record types),
``request`` (partial request decoding and raw-body splicing) and one sub-package per API
(``messages``, ``chat``, ``responses``) whose ``extract`` module turns upstream responses
into :class:`~aibridge.intercept.observations.Observation` values without touching the bytes.

Kept free of imports so importing a leaf module stays cheap and cycle-free.
"""
