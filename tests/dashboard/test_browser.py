"""The page in a real browser (Debian's Chromium through Playwright) against the simulated pool.

Set `CODEX_LIMITS_SCREENSHOTS=docs` to (re)write docs/dashboard-*.png; otherwise the
screenshots go to the test's temporary directory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import httpx
import pytest
from playwright.async_api import Page, expect

from app_server.dashboard.events import EventHub
from tests.support.browser import chromium
from tests.support.dashboard import auth_secrets, consume_calls, pool, served

pytestmark = pytest.mark.anyio

DOCS = Path(__file__).resolve().parents[2] / "docs"


def shots_dir(tmp_path: Path) -> Path:
    return DOCS if os.environ.get("CODEX_LIMITS_SCREENSHOTS") == "docs" else tmp_path


async def test_dashboard_in_a_browser(tmp_path: Path) -> None:
    shots = shots_dir(tmp_path)
    token_file = tmp_path / "token"
    with anyio.fail_after(60):
        hub = EventHub()
        async with (
            pool() as p,
            served(p.harness.client, token_file=token_file, hub=hub) as handle,
            chromium() as browser,
        ):
            token = token_file.read_text().strip()
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.set_default_timeout(10_000)
            expect.set_options(timeout=10_000)

            # Before signing in: the page says how to, and shows no account.
            anonymous = await context.new_page()
            await anonymous.goto(handle.url)
            await expect(anonymous.locator("#signed-out")).to_be_visible()
            await anonymous.close()

            # alice's first saved reset expires in 2 days: the page highlights the nearest expiry.
            p.upstream.accounts["alice"].credits[0].expires_at = int(time.time()) + 2 * 86400 + 3 * 3600 - 60

            login_code = handle.login_url.split("code=", 1)[1]
            await page.goto(handle.login_url)
            assert page.url == handle.url + "/"  # the code is gone from the address bar
            alice, bob, carol, dave = (page.locator(f"#account-{n}") for n in ("alice", "bob", "carol", "dave"))
            await expect(page.locator(".account")).to_have_count(4)  # alice, bob, carol and dave
            await expect(alice.locator(".label")).to_have_text("Alice (Pro)")
            await expect(alice.locator(".status")).to_have_text("Rate limited")
            await expect(alice.locator(".reset-count")).to_have_text("2 saved resets available")
            await expect(alice.locator(".credit")).to_have_count(2)
            await expect(alice.locator(".credit.soon")).to_have_count(1)
            await expect(alice.locator(".credit.soon")).to_contain_text("expires in 2 d 2 h")
            await expect(alice.locator(".credit.soon")).to_contain_text("Expires soon")
            await expect(alice.locator(".window")).to_have_count(2)
            await expect(alice.locator(".window").first).to_contain_text("100% used")
            await expect(alice.locator(".apply")).to_be_enabled()
            # Applying helps alice now (a window is used up); dave could apply, but nothing is used up yet.
            await expect(alice.locator(".readiness")).to_have_text("Ready: a window is used up.")
            await expect(dave.locator(".apply")).to_be_enabled()
            await expect(dave.locator(".readiness")).to_have_text("Available — nothing is used up yet.")
            assert await dave.locator(".apply").get_attribute("aria-describedby") == "account-dave-readiness"
            await expect(bob.locator(".readiness")).to_be_hidden()
            await expect(bob.locator(".apply")).to_be_disabled()
            await expect(bob.locator(".reason")).to_have_text("Cannot apply: no saved reset available.")
            assert await bob.locator(".apply").get_attribute("aria-describedby") == "account-bob-reason"
            await expect(carol.locator(".status")).to_have_text("Needs sign-in")
            await expect(carol.locator(".apply")).to_be_disabled()
            await expect(carol.locator(".reason")).to_contain_text("must sign in again")
            await expect(carol.locator(".account-error")).to_contain_text("codex login")

            # No secret in what the page holds: not the admin token, not the login code, nothing of auth.json.
            assert await page.evaluate("document.cookie") == ""  # the session cookie is HttpOnly
            sources = [await page.content()]
            async with httpx.AsyncClient(base_url=handle.url) as http:
                for asset in ("/", "/static/app.js", "/static/app.css"):
                    sources.append((await http.get(asset)).text)
            for source in sources:
                for secret in [token, login_code, *auth_secrets(p.homes)]:
                    assert secret not in source

            await page.screenshot(path=str(shots / "dashboard-1280.png"), full_page=True)

            # A second tab (same browser session) follows the changes without reloading.
            second = await context.new_page()
            await second.goto(handle.url)
            await expect(second.locator("#connection")).to_have_text("Live")
            await expect(second.locator("#account-alice .reset-count")).to_have_text("2 saved resets available")
            await second.evaluate("window.__notReloaded = true")

            # Apply on alice, by keyboard: focus, Enter, read the dialog, confirm.
            await alice.locator(".apply").focus()
            await page.keyboard.press("Enter")
            dialog = page.locator("#apply-dialog")
            await expect(dialog).to_be_visible()
            await expect(page.locator("#apply-cancel")).to_be_focused()
            await expect(dialog.locator("#apply-title")).to_have_text("Apply a saved reset to Alice (Pro)?")
            await expect(dialog.locator(".credit-option")).to_have_count(2)
            await expect(dialog.locator(".credit-option input").first).to_be_checked()
            await expect(dialog.locator(".credit-option label").first).to_contain_text("Full reset")
            await expect(dialog.locator("#apply-windows .window")).to_have_count(2)
            await expect(dialog.locator("#apply-warning")).to_contain_text("consumes one saved reset")
            await expect(dialog.locator("#apply-warning")).to_contain_text("cannot be undone")
            await expect(dialog.locator("#apply-not-exhausted")).to_be_hidden()  # alice's 5-hour window is full
            await page.screenshot(path=str(shots / "dashboard-apply-dialog.png"))
            assert consume_calls(p.upstream) == 0  # opening the dialog spends nothing

            await page.keyboard.press("Escape")  # Escape cancels: nothing spent
            await expect(dialog).to_be_hidden()
            await expect(alice.locator(".apply")).to_be_focused()
            assert consume_calls(p.upstream) == 0

            await page.keyboard.press("Enter")
            await expect(dialog).to_be_visible()
            # Cancel and open it again at once: the first dialog's `close` event, which arrives after the
            # second one opened, must leave the new one alone (it used to forget which account it was for).
            await page.evaluate(
                "() => { document.querySelector('#apply-cancel').click();"
                " document.querySelector('#account-alice .apply').click(); }"
            )
            await expect(dialog).to_be_visible()
            await expect(page.locator("#apply-cancel")).to_be_focused()
            await page.keyboard.press("Tab")
            await expect(page.locator("#apply-submit")).to_be_focused()
            await page.keyboard.press("Enter")
            await expect(dialog.locator("#apply-outcome")).to_contain_text("Reset applied")
            await expect(dialog.locator("#apply-title")).to_have_text("Saved reset applied to Alice (Pro)")
            rows = dialog.locator("#apply-before-after tbody tr")
            await expect(rows.first).to_have_text("Saved resets21")
            await expect(rows.filter(has_text="5-hour used")).to_have_text("5-hour used100%0%")
            await expect(page.locator("#apply-close")).to_be_focused()
            await page.screenshot(path=str(shots / "dashboard-apply-result.png"))
            await page.keyboard.press("Enter")
            await expect(dialog).to_be_hidden()
            await expect(alice.locator(".reset-count")).to_have_text("1 saved reset available")
            await expect(page.locator("#history tbody tr")).to_have_count(1)
            await expect(page.locator("#history tbody tr")).to_contain_text("Reset applied")
            await expect(page.locator("#history tbody tr")).to_contain_text("2 → 1")
            assert consume_calls(p.upstream) == 1

            # Her windows are empty now: a second apply would warn that nothing is exhausted.
            await alice.locator(".apply").click()
            await expect(dialog.locator("#apply-not-exhausted")).to_be_visible()
            await expect(dialog.locator(".credit-option")).to_have_count(1)
            await page.locator("#apply-cancel").click()
            await expect(dialog).to_be_hidden()
            assert consume_calls(p.upstream) == 1

            # The second tab saw it through the event stream, without a reload.
            await expect(second.locator("#account-alice .reset-count")).to_have_text("1 saved reset available")
            await expect(second.locator("#history tbody tr")).to_have_count(1)
            assert await second.evaluate("window.__notReloaded === true")

            # Refresh (the force probe) on bob: never spends anything.
            await bob.locator(".refresh").click()
            await expect(bob.locator(".refresh")).to_have_text("Refresh")
            await page.locator("#refresh-all").click()
            await expect(page.locator("#refresh-all")).to_have_text("Refresh all")
            assert consume_calls(p.upstream) == 1

            await second.set_viewport_size({"width": 390, "height": 844})
            # An alert pushed by the service: its whole message shows, wrapped inside 390 px, until dismissed.
            long_message = (
                "carol: needs to sign in again: run "
                "`CODEX_HOME=/home/operator/.config/codex-accounts/carol-team-workspace-2025 codex login`"
            )
            alert = {"kind": "reauthRequired", "accountId": "carol", "message": long_message, "severity": "critical"}
            hub.publish("alert", {"alert": {**alert, "emittedAt": int(time.time())}})
            notice = second.locator("#alerts .alert").filter(has_text="carol-team-workspace-2025")
            await expect(notice).to_have_text(f"{long_message} Dismiss")
            await expect(notice).to_have_class("alert alert-critical")
            box = await notice.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
            assert box["height"] > 3 * 16  # wrapped over several lines, not one line running off the side
            text = notice.locator("span")
            assert await text.evaluate("(node) => node.scrollWidth <= node.clientWidth")
            await check_narrow(second)
            await second.screenshot(path=str(shots / "dashboard-390.png"), full_page=True)
            await notice.get_by_role("button", name="Dismiss").click()
            await expect(notice).to_have_count(0)
            assert errors == []


async def check_narrow(page: Page) -> None:
    """At 390 px nothing scrolls sideways and every button stays reachable."""
    overflow = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    box = await page.locator("#account-alice .apply").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
