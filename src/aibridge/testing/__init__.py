"""Test helpers for aibridge: real servers, real databases, real processes.

Shipped with the package so every test folder (and a deployment's own smoke tests) uses the
same helpers instead of importing them from each other. Nothing here imports pytest: a
helper that cannot go on raises :class:`AssertionError` (a failed check) or
:class:`RuntimeError` (a missing prerequisite), and the pytest glue (fixtures, skips) lives
in the test suite's ``conftest.py`` files. This is the top layer beside ``cli``: it may
import anything of aibridge, and nothing else imports it.

Modules:

* :mod:`~aibridge.testing.gateway` — the gateway app on a loopback port (with its first
  admin's key), members with a key, query counting;
* :mod:`~aibridge.testing.stack` — gateway + fake upstream + admin and member tokens;
* :mod:`~aibridge.testing.recorded` — reading back what the recorder wrote;
* :mod:`~aibridge.testing.databases` — throwaway PostgreSQL databases, migrated engines;
* :mod:`~aibridge.testing.providers` — provider rows built in memory;
* :mod:`~aibridge.testing.outage` — database outages on cue;
* :mod:`~aibridge.testing.replicas` — real ``aibridge serve`` subprocesses;
* :mod:`~aibridge.testing.observe` — running the response observers over bytes;
* :mod:`~aibridge.testing.exchanges` — captured-format exchange files;
* :mod:`~aibridge.testing.clients` — SDK clients closed after each test;
* :mod:`~aibridge.testing.openai_sdk` — the official ``openai`` SDK against a stack (needs
  the ``dev`` extra).
"""
