"""v1 of the Codex app-server protocol: the `initialize` handshake."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ._model import WireModel

__all__ = [
    "ClientInfo",
    "InitializeCapabilities",
    "InitializeParams",
    "InitializeResponse",
]


class ClientInfo(WireModel):
    name: str
    title: str | None = None
    version: str


class InitializeCapabilities(WireModel):
    """Client-declared capabilities negotiated during initialize."""

    experimental_api: bool = Field(default=False, description="Opt into receiving experimental API methods and fields.")
    opt_out_notification_methods: list[str] | None = Field(
        default=None,
        description="Exact notification method names that should be suppressed for this connection "
        "(for example `thread/started`).",
    )
    request_attestation: bool = Field(
        default=False, description="Opt into `attestation/generate` requests for upstream `x-oai-attestation`."
    )
    extensions: dict[str, Any] | None = Field(
        default=None, description="MCP extension settings declared by the app-server client."
    )
    mcp_server_openai_form_elicitation: bool = Field(
        default=False, description="Legacy opt-in for the `openai/form` MCP extension."
    )
    explicit_gateway_oauth: bool = Field(
        default=False, description="Use explicit gateway OAuth login instead of automatic browser authorization."
    )
    required_human_approval: bool = Field(
        default=False, description="Present `humanCommand` approvals to a person and return only a one-time decision."
    )


class InitializeParams(WireModel):
    client_info: ClientInfo
    capabilities: InitializeCapabilities | None = None


class InitializeResponse(WireModel):
    user_agent: str
    codex_home: str = Field(description="Absolute path to the server's $CODEX_HOME directory.")
    platform_family: str = Field(
        description='Platform family for the running app-server target, for example `"unix"` or `"windows"`.'
    )
    platform_os: str = Field(
        description='Operating system for the running app-server target, for example `"macos"`, `"linux"`, '
        'or `"windows"`.'
    )
