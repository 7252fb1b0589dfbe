"""Centrally managed MCP servers: their settings as the gateway uses them (``settings``),
the validation of admin/CLI input (``config``) and the per-user token loader
(``credentials``). The MCP engine (proxies, tool naming, injection) builds on these.

Layer: below ``providers`` | ``recording`` and above ``store``.
"""
