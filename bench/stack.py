"""Starting what the load runs against: the upstream, the bare relay, aibridge instances.

Also the per-instance database (a SQLite file in a temporary data dir, or a temporary
PostgreSQL database created and dropped here) and, for ``--ref``, a git worktree of
another ref installed into its own venv.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from aibridge.testing.redis import delete_prefix
from bench.common import (
    APIS,
    HOST,
    REPO_ROOT,
    START_TIMEOUT,
    UPSTREAM_KEY,
    Api,
    child_env,
    free_port,
)
from bench.procs import Processes, process_tree, read_line, wait_http

PORT_LINE = re.compile(rb"^PORT (\d+)")


GENEROUS_LIMITS = (
    "--rpm",
    "1000000000",
    "--tpm",
    "1000000000000",
    "--concurrent",
    "100000",
    "--models",
    f"{','.join(api.model.split('-')[0] + '-*' for api in APIS.values())}",
    "--budget",
    "1000000/month",
)
"""Every per-user (and per-key) limit, none of which a benchmark run reaches."""


@dataclass
class Target:
    """Something the load generator drives: the upstream itself, the bare relay or a gateway."""

    name: str
    kind: str
    """``direct``, ``bare`` or ``aibridge``."""
    base_url: str
    pid: int | None = None
    """The relay process (None for direct: there is no relay)."""
    token: str | None = None
    workers: int = 1
    cpu: int | None = None
    source: str = ""
    """Where the gateway's code came from (aibridge targets)."""

    def url(self, api: Api) -> str:
        """The request URL for ``api`` on this target."""
        prefix = f"/{api.provider}" if self.kind == "aibridge" else ""
        return f"{self.base_url}{prefix}{api.path}"

    def headers(self, api: Api) -> dict[str, str]:
        """The request headers for ``api`` on this target."""
        if self.kind == "aibridge":
            assert self.token is not None
            return api.gateway_headers(self.token)
        return api.upstream_headers()

    def relay_pids(self) -> list[int]:
        """The relay process and its workers (empty for direct)."""
        return process_tree(self.pid) if self.pid is not None else []


def check_target(target: Target, api: Api, stream: bool) -> None:
    """One request, checked for a complete reply, before any load: a misconfigured
    target fails loudly instead of producing a fast table of errors."""
    request = urllib.request.Request(
        target.url(api), data=api.body(stream), headers=target.headers(api), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, data = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, data = exc.code, exc.read()
    if not api.response_ok(stream, status, data):
        raise RuntimeError(
            f"{target.name} {api.name} {'stream' if stream else 'blocking'}: "
            f"status {status}, body {data[-300:]!r}"
        )


class Stack:
    """The processes and resources of one benchmark run; :meth:`close` releases all."""

    def __init__(self, procs: Processes, tmp: Path, client_cpu: int | None) -> None:
        self.procs = procs
        self.tmp = tmp
        self.client_cpu = client_cpu
        self._pg_databases: list[tuple[str, str]] = []
        self._worktrees: list[Path] = []
        self._redis_prefixes: list[tuple[str, str]] = []

    # -------------------------------------------------------------- upstream and bare

    def start_upstream(self) -> Target:
        """The fast fake upstream on the client CPU."""
        argv = [sys.executable, "-m", "bench.roles", "upstream", "--port", "0"]
        proc = self.procs.start(argv, cpu=self.client_cpu, env=child_env(), name="upstream")
        port = int(read_line(self.procs, proc, PORT_LINE, START_TIMEOUT))
        return Target("direct", "direct", f"http://{HOST}:{port}")

    def start_trace_sink(self) -> str:
        """The OTLP trace sink on the client CPU (like the upstream); its base URL."""
        argv = [sys.executable, "-m", "bench.roles", "trace-sink", "--port", "0"]
        proc = self.procs.start(argv, cpu=self.client_cpu, env=child_env(), name="trace-sink")
        port = int(read_line(self.procs, proc, PORT_LINE, START_TIMEOUT))
        return f"http://{HOST}:{port}"

    def start_bare(self, upstream: str, cpu: int | None) -> Target:
        """The bare aiohttp relay, pinned like the gateway."""
        argv = [sys.executable, "-m", "bench.roles", "bare", "--upstream", upstream]
        proc = self.procs.start(argv, cpu=cpu, env=child_env(), name="bare")
        port = int(read_line(self.procs, proc, PORT_LINE, START_TIMEOUT))
        return Target("bare", "bare", f"http://{HOST}:{port}", pid=proc.pid, cpu=cpu)

    def start_bare_recording(self, upstream: str, cpu: int | None) -> Target:
        """The bare relay plus exact recording (:func:`bench.roles.serve_bare_recording`),
        pinned like the gateway, recording into a database migrated by the CLI."""
        data_dir = self.tmp / "data-bare-recording"
        data_dir.mkdir()
        env = child_env({"AIBRIDGE_DATA_DIR": str(data_dir)})
        _cli(sys.executable, ["users", "create", "benchuser"], env)
        with contextlib.closing(sqlite3.connect(data_dir / "aibridge.db")) as db:
            (user_id,) = db.execute("SELECT id FROM users WHERE username = 'benchuser'").fetchone()
        argv = [sys.executable, "-m", "bench.roles", "bare-recording", "--upstream", upstream]
        argv += ["--data-dir", str(data_dir), "--user-id", str(uuid.UUID(str(user_id)))]
        proc = self.procs.start(argv, cpu=cpu, env=env, name="bare-recording")
        port = int(read_line(self.procs, proc, PORT_LINE, START_TIMEOUT))
        url = f"http://{HOST}:{port}"
        return Target("bare+recording", "bare", url, pid=proc.pid, cpu=cpu)

    # -------------------------------------------------------------- aibridge

    def start_aibridge(
        self,
        name: str,
        *,
        python: str,
        source: str,
        upstream: str,
        cpu: int | None,
        workers: int = 1,
        postgres_url: str | None = None,
        limits: bool = False,
        redis_url: str | None = None,
        log_level: str = "warning",
        trace_sink: str | None = None,
        trace_ratio: float = 1.0,
    ) -> Target:
        """``aibridge serve`` (after creating both providers and a user with its CLI).

        ``limits``: every limit set, generously enough that nothing is refused (see
        :data:`GENEROUS_LIMITS`): on the user, on its key, a global budget and the
        replica's ``max_concurrency``; ``redis_url`` shares them in Redis (under a
        prefix of this run); ``trace_sink``: OpenTelemetry traces on, exported there
        (OTLP over HTTP/protobuf, the SDK's default batching), sampling ``trace_ratio``
        of the traces. ``log_level``: the gateway's (``info`` writes the access line of
        every request, the production default)."""
        data_dir = self.tmp / f"data-{name}"
        data_dir.mkdir()
        port = free_port()
        env = child_env(
            {
                "AIBRIDGE_DATA_DIR": str(data_dir),
                "AIBRIDGE_LISTEN": f"{HOST}:{port}",
                "AIBRIDGE_LOG_LEVEL": log_level,
            }
        )
        if postgres_url:
            env["AIBRIDGE_DATABASE_URL"] = self._temp_database(postgres_url)
        if limits:
            env["AIBRIDGE_GLOBAL_BUDGET"] = "1000000000/month"
            env["AIBRIDGE_MAX_CONCURRENCY"] = "100000"
        if trace_sink:
            env["OTEL_TRACES_EXPORTER"] = "otlp"
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = trace_sink
            env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
            env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
            env["OTEL_TRACES_SAMPLER_ARG"] = f"{trace_ratio:g}"
        if redis_url:
            env["AIBRIDGE_REDIS_URL"] = redis_url
            prefix = f"aibridge-bench:{secrets.token_hex(6)}:"
            env["AIBRIDGE_REDIS_PREFIX"] = prefix
            self._redis_prefixes.append((redis_url, prefix))
        for api in APIS.values():
            _cli(
                python,
                [
                    "providers",
                    "create",
                    api.provider,
                    "--type",
                    api.provider_type,
                    "--base-url",
                    upstream + api.base_suffix,
                    "--api-key",
                    UPSTREAM_KEY,
                ],
                env,
            )
        token = _cli(python, ["users", "create", "benchuser"], env).strip().splitlines()[-1]
        if not token.strip().startswith("aib-"):
            raise RuntimeError(f"unexpected `users create` output: {token!r}")
        if limits:
            key_id = token.strip().split("-")[1]
            _cli(python, ["users", "limits", "set", "benchuser", *GENEROUS_LIMITS], env)
            _cli(
                python,
                ["users", "limits", "set", "benchuser", "--key", key_id, *GENEROUS_LIMITS],
                env,
            )
        argv = _aibridge(python, "serve")
        if workers > 1:
            argv += ["--workers", str(workers)]
        proc = self.procs.start(argv, cpu=cpu, env=env, name=name, stdout=False)
        try:
            wait_http(f"http://{HOST}:{port}/readyz", START_TIMEOUT, proc)
        except Exception as exc:
            raise RuntimeError(f"{name} did not start: {exc}\n{self.procs.log_tail(proc)}") from exc
        return Target(
            name,
            "aibridge",
            f"http://{HOST}:{port}",
            pid=proc.pid,
            token=token.strip(),
            workers=workers,
            cpu=cpu,
            source=source,
        )

    def _temp_database(self, admin_url: str) -> str:
        """CREATE a fresh database on ``admin_url``'s server; it is dropped on close."""
        name = f"aibridge_bench_{secrets.token_hex(4)}"
        _pg_execute(admin_url, f'CREATE DATABASE "{name}"')
        self._pg_databases.append((admin_url, name))
        return urllib.parse.urlsplit(admin_url)._replace(path=f"/{name}").geturl()

    # -------------------------------------------------------------- --ref

    def prepare_ref(self, ref: str) -> tuple[str, str]:
        """A worktree of ``ref`` installed into its own venv; returns (python, sha)."""
        sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}").strip()
        tree = self.tmp / "ref-tree"
        _git("worktree", "add", "--detach", str(tree), sha)
        self._worktrees.append(tree)
        venv = tree / ".venv"
        _run([sys.executable, "-m", "venv", str(venv)], timeout=180)
        python = str(venv / "bin" / "python")
        site = _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).strip()
        # Dependencies come from this venv (same lock); only aibridge differs. The ref's
        # own editable install comes first on sys.path, so its aibridge is the one imported.
        Path(site, "aibridge_bench_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        try:
            # Build isolation: pip fetches the build backend (setuptools, wheel) itself.
            _run([python, "-m", "pip", "install", "-q", "--no-deps", "-e", str(tree)], timeout=300)
        except RuntimeError as exc:
            # What an editable install of a src layout amounts to; enough to import it.
            print(f"warning: pip install -e failed, using a .pth: {exc}", file=sys.stderr)
            Path(site, "aibridge_bench_ref.pth").write_text(str(tree / "src") + "\n")
        found = _run([python, "-c", "import aibridge; print(aibridge.__file__)"]).strip()
        if not found.startswith(str(tree)):
            raise RuntimeError(f"the ref venv imports aibridge from {found}, not {tree}")
        return python, sha

    def close(self) -> None:
        """Stop every process, drop temporary databases, remove worktrees."""
        self.procs.close()
        for admin_url, name in self._pg_databases:
            try:
                _pg_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:
                print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)
        for tree in self._worktrees:
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(tree)],
                capture_output=True,
                timeout=60,
                check=False,
            )
            shutil.rmtree(tree, ignore_errors=True)
        for url, prefix in self._redis_prefixes:
            try:
                asyncio.run(delete_prefix(url, prefix))
            except Exception as exc:
                print(f"warning: could not delete Redis keys {prefix}*: {exc}", file=sys.stderr)
        if self._worktrees:
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "worktree", "prune"],
                capture_output=True,
                timeout=60,
                check=False,
            )


def _aibridge(python: str, *args: str) -> list[str]:
    """argv for the ``aibridge`` CLI of ``python``'s environment."""
    return [python, "-c", "from aibridge.cli import main; main()", *args]


def _cli(python: str, args: list[str], env: dict[str, str]) -> str:
    """Run an ``aibridge`` CLI command to completion (bounded); return its stdout."""
    done = subprocess.run(
        _aibridge(python, *args), env=env, capture_output=True, timeout=60, check=False, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"aibridge {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def _run(argv: list[str], timeout: float = 60) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def _git(*args: str) -> str:
    return _run(["git", "-C", str(REPO_ROOT), *args])


def _pg_execute(url: str, sql: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE), bounded."""
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(go(), 30))
