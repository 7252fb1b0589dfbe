"""HTTPS proxy mode: clients that only honour ``HTTPS_PROXY`` reach the gateway.

CONNECTs to provider hosts are decrypted with a leaf from the proxy's CA (``ca``) and
re-routed to the data plane as ``/{provider}/…`` (``mitm``); every other host is tunnelled
blind with egress protection (``tunnel``). The host → provider map is hot-reloaded
(``routing``); ``daemon`` is the listener; ``metrics`` its series.
"""
