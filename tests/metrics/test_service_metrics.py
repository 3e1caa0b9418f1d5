"""The real composition root (`serve --simulate --listen ws://… --ws-auth capability-token`) as a child process:
its /metrics is wired to the pool, the dispatcher and the HTTP pool, behind the listener's token."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app_server.rpc.wsclient import connect_tcp, running_client
from protocol import ext
from tests.support.listener import get, raw_http
from tests.support.service_process import INIT_PARAMS, REPO, SERVE, WAIT, Stderr, killed_at_exit

pytestmark = [pytest.mark.anyio, pytest.mark.subprocess]


async def test_the_service_serves_metrics_of_its_pool_behind_its_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o600)
    args = ["--simulate", "--listen", "ws://127.0.0.1:0", "--ws-auth", "capability-token"]
    process = await anyio.open_process([*SERVE, *args, "--ws-token-file", str(token_file)], cwd=REPO)
    err = Stderr()
    async with process, anyio.create_task_group() as outer, killed_at_exit(process):
        outer.start_soon(err.drain, process.stderr)
        banner = await err.banner()
        url = next(w for w in banner.split() if w.startswith("ws://"))
        host, _, port = url.removeprefix("ws://").rpartition(":")
        bearer = {"Authorization": "Bearer s3cret"}
        with anyio.fail_after(WAIT):
            ws = await connect_tcp(host, int(port), headers=bearer)
            async with running_client(ws) as client:
                await client.request("initialize", INIT_PARAMS)
                listed = ext.AccountPoolListResponse.model_validate(await client.request("accountPool/list", {}))
                async with await anyio.connect_tcp(host, int(port)) as stream:
                    refused = await raw_http(stream, get("/metrics"))
                async with await anyio.connect_tcp(host, int(port)) as stream:
                    scraped = await raw_http(stream, get("/metrics", bearer))
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    assert refused.status == 401
    assert scraped.status == 200
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped.body.decode())
        for sample in family.samples
    }
    for summary in listed.accounts:
        assert summary.reset_credits is not None or summary.status is ext.AccountStatus.REAUTH_REQUIRED
        if summary.reset_credits is not None:
            credits = ("codex_limits_account_reset_credits_available", (("account", summary.account_id),))
            assert values[credits] == summary.reset_credits.available_count
        status = ("codex_limits_account_status", (("account", summary.account_id), ("status", summary.status.value)))
        assert values[status] == 1
    assert values[("codex_limits_rpc_requests_total", (("method", "accountPool/list"), ("outcome", "ok")))] == 1
    assert values[("codex_limits_upstream_requests_total", (("endpoint", "usage"), ("status_class", "2xx")))] >= 3
    assert values[("codex_limits_connected_clients", ())] == 1
