"""The inventory of saved resets in the page's header and the forecasts in its rows, in a real browser (issue #23).

Set `CODEX_LIMITS_SCREENSHOTS=docs` to (re)write docs/dashboard-inventory.png.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from playwright.async_api import expect

from app_server.store.base import UsageSample
from tests.support.browser import chromium
from tests.support.dashboard import consume_calls, pool, served

pytestmark = pytest.mark.anyio

DOCS = Path(__file__).resolve().parents[2] / "docs"


async def test_inventory_and_forecasts_on_the_page(tmp_path: Path) -> None:
    shots = DOCS if os.environ.get("CODEX_LIMITS_SCREENSHOTS") == "docs" else tmp_path
    with anyio.fail_after(90):
        async with (
            pool() as p,
            served(p.harness.client, token_file=tmp_path / "token") as handle,
            chromium() as browser,
        ):
            sim = p.upstream.accounts
            # dave's saved reset expires a day before alice's first: the header interleaves the accounts.
            alice_first, alice_second = (c.expires_at for c in sim["alice"].credits)
            assert alice_first is not None and alice_second is not None
            sim["dave"].credits[0].expires_at = alice_first - 86_400

            # bob is read once (that read is recorded), and his history before it is written: 15, 25, 35 % at
            # 20-minute steps in one 5-hour window, 30 %/h, so he runs out 65 % / 30 %/h = 130 minutes on.
            listed: dict[str, Any] = await p.harness.client.request("accountPool/list", {})
            bob = next(s for s in listed["accounts"] if s["accountId"] == "bob")
            read_at, resets_at = bob["refreshedAt"], bob["rateLimits"]["primary"]["resetsAt"]
            assert bob["rateLimits"]["primary"]["usedPercent"] == 35
            await p.harness.services.store.record_usage(
                [
                    UsageSample("bob", "codex", "primary", read_at - m * 1200, 35 - 10 * m, 300, resets_at)
                    for m in (2, 1)
                ]
            )

            page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.set_default_timeout(15_000)
            expect.set_options(timeout=15_000)
            await page.goto(handle.login_url)

            inventory = page.locator("#inventory")
            await expect(inventory).to_be_visible()
            items = inventory.locator(".inventory-credit")
            await expect(items).to_have_count(3)
            order = [await item.get_attribute("data-credit-id") for item in await items.all()]
            assert order == ["credit-dave-1", "credit-alice-1", "credit-alice-2"]
            await expect(items.nth(0)).to_contain_text("Dave (Pro) · Full reset · expires in 5 d")
            await expect(items.nth(1)).to_contain_text("Alice (Pro)")
            times = [await t.get_attribute("datetime") for t in await inventory.locator("time").all()]
            assert times == [
                datetime.datetime.fromtimestamp(at, datetime.UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z")
                for at in (alice_first - 86_400, alice_first, alice_second)
            ]
            await expect(page.locator("#inventory-total")).to_have_text("3 saved resets")
            await expect(page.locator("#inventory-unlisted")).to_contain_text("Carol (Team)")

            bob_window = page.locator("#account-bob .window").first
            await expect(bob_window.locator(".forecast")).to_contain_text("30 %/h: runs out in 2 h")
            await expect(bob_window.locator(".forecast")).to_contain_text("before it resets")
            await expect(bob_window.locator(".forecast.runs-out")).to_have_count(1)
            runs_out = bob_window.locator("[data-runs-out-at]")
            assert await runs_out.get_attribute("data-runs-out-at") == str(read_at + 7800)
            # alice was read once: too little history, said plainly.
            await expect(page.locator("#account-alice .window .forecast").first).to_have_text(
                "Too little history to forecast yet."
            )
            await page.screenshot(path=str(shots / "dashboard-inventory.png"))
            assert consume_calls(p.upstream) == 0 and errors == []
