"""The interception pipeline for the bridged APIs, and the side-channel parsing it shares.

``pipeline`` (one request, step by step) with ``relay`` (error, blocking, stream),
``hooks`` (what metrics and recording addons observe), ``api`` (the :class:`API` protocol
each of ``messages``, ``chat`` and ``responses`` implements in its own folder: request
decoding, response observers, stream error event), ``errors`` (provider-shaped error
bodies), ``sse`` (incremental SSE parsing), ``observations`` (what the observers extract),
``request`` (reading the body and the partial decoding the APIs share) and
``passthrough`` (the reverse proxy for the routes that are not recorded).

Kept free of imports so importing a leaf module stays cheap and cycle-free.
"""
