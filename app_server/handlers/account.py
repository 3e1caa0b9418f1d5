"""The upstream methods: `initialize`, `account/rateLimits/read`, `account/rateLimitResetCredit/consume`."""

from __future__ import annotations

import platform

from app_server.handlers.context import Context
from app_server.upstream.errors import Purpose
from app_server.upstream.useragent import PRODUCT, is_header_value, user_agent
from protocol import v1, v2
from protocol.jsonrpc import INVALID_REQUEST, RpcError


def _platform() -> tuple[str, str]:
    system = platform.system()
    if system == "Windows":
        return "windows", "windows"
    return "unix", "macos" if system == "Darwin" else system.lower() or "unknown"


def initialize(ctx: Context, params: v1.InitializeParams) -> v1.InitializeResponse:
    """`initialize`: once per connection; sets the session's client, opt-outs and user agent (inline)."""
    session = ctx.session
    if session.initialized:
        raise RpcError(INVALID_REQUEST, "Already initialized")
    info = params.client_info
    if not is_header_value(info.name):
        raise RpcError(INVALID_REQUEST, f"Invalid clientInfo.name: '{info.name}'. Must be a valid HTTP header value.")
    capabilities = params.capabilities
    session.client_info = info
    session.opt_out = frozenset(capabilities.opt_out_notification_methods or ()) if capabilities else frozenset()
    session.user_agent = user_agent(info.name, info.version)
    session.initialized = True
    family, os_name = _platform()
    return v1.InitializeResponse(
        user_agent=session.user_agent,
        codex_home=str(ctx.services.settings.codex_home),
        platform_family=family,
        platform_os=os_name,
    )


def originator(ctx: Context) -> str:
    """The calling client's name (from `initialize`), else ours: the backend calls' originator."""

    info = ctx.session.client_info
    return info.name if info is not None else PRODUCT


def client_user_agent(ctx: Context) -> str:
    """The user agent of this connection's client (set by `initialize`), for backend calls."""
    return ctx.session.user_agent or user_agent()


async def read_rate_limits(ctx: Context, params: v2.GetAccountRateLimitsParams) -> v2.GetAccountRateLimitsResponse:
    """`account/rateLimits/read`: the `$CODEX_HOME` account's usage and saved resets, as upstream reads them."""
    account = ctx.services.default_account()
    caller = await account.caller(Purpose.READ, user_agent=client_user_agent(ctx), originator=originator(ctx))
    return await account.read(
        caller, details=not params.exclude_reset_credit_details, luna=params.supports_luna_reserve
    )


def check_keys(idempotency_key: str, credit_id: str | None) -> None:
    """Answered before queueing (D6): same texts as upstream, without waiting behind a slow consume."""
    if idempotency_key == "":
        raise RpcError(INVALID_REQUEST, "idempotencyKey must not be empty")
    if credit_id == "":
        raise RpcError(INVALID_REQUEST, "creditId must not be empty")


def check_consume(params: v2.ConsumeAccountRateLimitResetCreditParams) -> None:
    """Before the consume is queued: refuses an empty idempotency key or credit id, in upstream's words."""

    check_keys(params.idempotency_key, params.credit_id)


async def consume_reset_credit(
    ctx: Context, params: v2.ConsumeAccountRateLimitResetCreditParams
) -> v2.ConsumeAccountRateLimitResetCreditResponse:
    """`account/rateLimitResetCredit/consume`: upstream's consume on `$CODEX_HOME`, one at a time (FIFO)."""
    account = ctx.services.default_account()
    async with account.spend_lock:
        caller = await account.caller(Purpose.CONSUME, user_agent=client_user_agent(ctx), originator=originator(ctx))
        outcome = await account.consume(caller, params.idempotency_key, params.credit_id)
    return v2.ConsumeAccountRateLimitResetCreditResponse(outcome=outcome)
