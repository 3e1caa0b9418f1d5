"""Binding generation from the exported schemas: datamodel-code-generator's pydantic v2 models parse recorded traffic.

The generator runs on the files a client would vendor (the bundle, and single per-type files), the generated module is
imported, and every recorded `initialize`, `account/rateLimits/read` and `account/rateLimitResetCredit/consume` result
and every `account/rateLimits/updated` notification is parsed with it and compared with what the server wrote.
The TypeScript half (json-schema-to-typescript, then `tsc --strict`) needs npm and is a CI step:
bindings/ts/run-check.sh.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel, RootModel, ValidationError

from protocol import ext, schema, v2
from tests.support.transcripts import REPO_ROOT
from tests.support.wire_samples import Sample, samples

SCHEMAS = REPO_ROOT / "schemas" / "json"
BUNDLE = SCHEMAS / schema.BUNDLE_NAME
CODEGEN = Path(sys.executable).with_name("datamodel-codegen")
CODEGEN_ARGS = (
    "--input-file-type",
    "jsonschema",
    "--output-model-type",
    "pydantic_v2.BaseModel",
    "--target-python-version",
    "3.11",
    "--formatters",
    "builtin",
    "--disable-timestamp",
)

# Warning categories datamodel-codegen prints for our schema shape today, each with the reason it is tolerated.
KNOWN_WARNINGS = {
    # The `method` member of each ClientRequest / ServerNotification variant is an inline one-value enum; the default
    # naming calls them Method, Method1 ... Method8 (upstream's bundle gets Method ... Method205 the same way).
    "NamingHintWarning",
}
_WARNING = re.compile(r"^\S.*?:\d+: (?P<category>\w+): (?P<message>.*)$", re.MULTILINE)

READ = "account/rateLimits/read"
CONSUME = "account/rateLimitResetCredit/consume"
INITIALIZE = "initialize"
UPDATED = "account/rateLimits/updated"


@dataclass(frozen=True)
class Generated:
    module: ModuleType
    warnings: list[tuple[str, str]]  # (category, message)
    schema: dict[str, Any]


def _generate(schema_file: Path, out_dir: Path, module_name: str) -> Generated:
    assert CODEGEN.is_file(), f"{CODEGEN} is missing: install the dev extra (pip install -e '.[dev]')"
    out = out_dir / f"{module_name}.py"
    done = subprocess.run(
        [str(CODEGEN), "--input", str(schema_file), "--output", str(out), *CODEGEN_ARGS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"datamodel-codegen failed on {schema_file}:\n{done.stderr}"
    warnings = [(m["category"], m["message"]) for m in _WARNING.finditer(done.stderr)]
    spec = importlib.util.spec_from_file_location(module_name, out)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves the postponed annotations through sys.modules
    spec.loader.exec_module(module)
    return Generated(module, warnings, json.loads(schema_file.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    name = "codex_limits_generated_bundle"
    yield _generate(BUNDLE, tmp_path_factory.mktemp("bindings"), name)
    sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def per_type_read(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    name = "codex_limits_generated_v2_read"
    yield _generate(SCHEMAS / "v2" / "GetAccountRateLimitsResponse.json", tmp_path_factory.mktemp("bindings"), name)
    sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def per_type_summary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    name = "codex_limits_generated_ext_summary"
    yield _generate(SCHEMAS / "ext" / "AccountSummary.json", tmp_path_factory.mktemp("bindings"), name)
    sys.modules.pop(name, None)


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _classes(module: ModuleType) -> list[type[BaseModel]]:
    return [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, BaseModel) and c.__module__ == module.__name__
    ]


def _wire_names(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def model_for(generated: Generated, definition: str) -> type[BaseModel]:
    """The generated class of a schema object: named after it (up to case, punctuation and a numbered suffix) and
    with its properties as fields, which also tells it apart from another class that took a colliding name."""
    root = generated.schema
    properties = set((root if root.get("title") == definition else root["definitions"][definition])["properties"])
    found = [
        c
        for c in _classes(generated.module)
        if _norm(c.__name__).rstrip("0123456789") == _norm(definition) and _wire_names(c) == properties
    ]
    names = sorted(c.__name__ for c in _classes(generated.module))
    assert len(found) == 1, f"{definition}: generated classes {found} among {names}"
    return found[0]


def wire(value: Any, *path: str) -> Any:
    """Follow wire member names through generated models, whatever Python names the generator gave the fields."""
    for member in path:
        assert isinstance(value, BaseModel), f"{member}: {value!r} is not a model"
        attributes = {(field.alias or name): name for name, field in type(value).model_fields.items()}
        value = getattr(value, attributes[member])
    return value


def plain(value: Any) -> Any:
    """What a parsed member is on the wire: a root model's root, an enum member's value."""
    while isinstance(value, RootModel):
        value = value.root
    return value.value if isinstance(value, Enum) else value


def on_the_wire(parsed: BaseModel) -> Any:
    return parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)


def recorded(kind: str) -> list[Sample]:
    found = [s for s in samples() if s.kind == kind]
    assert found, f"no recorded {kind}"
    return found


# ---------------------------------------------------------------------------------------------------------------------
# The bundle


def test_bundle_generates_without_unexpected_warnings(bundle: Generated) -> None:
    unexpected = [(category, message) for category, message in bundle.warnings if category not in KNOWN_WARNINGS]
    assert not unexpected, f"datamodel-codegen warned about the bundle: {unexpected}"


def test_every_bundle_definition_becomes_a_class(bundle: Generated) -> None:
    module = bundle.module
    generated = {
        _norm(name) for name, value in vars(module).items() if getattr(value, "__module__", None) == module.__name__
    }
    missing = [name for name in bundle.schema["definitions"] if _norm(name) not in generated]
    assert not missing, f"no generated class for {missing}"


def test_recorded_reads_parse(bundle: Generated) -> None:
    read_model = model_for(bundle, "GetAccountRateLimitsResponse")
    snapshot_model = model_for(bundle, "RateLimitSnapshot")
    credit_model = model_for(bundle, "RateLimitResetCredit")
    reads = recorded(READ)
    with_window = with_credits = 0
    for sample in reads:
        payload = sample.payload
        parsed = read_model.model_validate(payload)
        assert on_the_wire(parsed) == payload, sample.transcript
        rate_limits = wire(parsed, "rateLimits")
        assert isinstance(rate_limits, snapshot_model)
        assert plain(wire(rate_limits, "planType")) == payload["rateLimits"]["planType"]
        primary = payload["rateLimits"]["primary"]
        if primary is None:
            assert wire(rate_limits, "primary") is None
        else:
            with_window += 1
            assert wire(rate_limits, "primary", "usedPercent") == primary["usedPercent"], sample.transcript
            assert wire(rate_limits, "primary", "resetsAt") == primary["resetsAt"], sample.transcript
        summary = payload["rateLimitResetCredits"]
        if summary is not None and summary["credits"]:
            with_credits += 1
            credits = wire(parsed, "rateLimitResetCredits", "credits")
            assert all(isinstance(c, credit_model) for c in credits)
            assert [plain(wire(c, "status")) for c in credits] == [c["status"] for c in summary["credits"]]
        assert wire(parsed, "accountId") == payload["accountId"]
        assert wire(parsed, "ordinaryUsageAllowed") == payload["ordinaryUsageAllowed"]
    assert with_window > 0 and with_credits > 0


def test_the_full_mapping_read_keeps_every_value(bundle: Generated) -> None:
    read_model = model_for(bundle, "GetAccountRateLimitsResponse")
    sample = next(s for s in recorded(READ) if s.transcript == "10_read_full_mapping")
    parsed: Any = read_model.model_validate(sample.payload)
    assert wire(parsed, "rateLimits", "primary", "usedPercent") == 42
    assert wire(parsed, "rateLimits", "individualLimit", "remainingPercent") == 68
    assert plain(wire(parsed, "rateLimits", "rateLimitReachedType")) == "workspace_member_usage_limit_reached"
    assert wire(parsed, "rateLimitResetCredits", "availableCount") == 2
    assert on_the_wire(parsed)["rateLimitsByLimitId"]["codex_bengalfox"]["primary"]["usedPercent"] == 88
    assert wire(parsed, "rateLimitUpsell") == {
        "banner_type": "upsell",
        "title": "T",
        "cta": {"label": "Go", "url": "https://example.com/upgrade"},
    }


def test_generated_read_model_rejects_wrong_values(bundle: Generated) -> None:
    read_model = model_for(bundle, "GetAccountRateLimitsResponse")
    good = next(s for s in recorded(READ) if s.transcript == "10_read_full_mapping").payload
    bad_percent = json.loads(json.dumps(good))
    bad_percent["rateLimits"]["primary"]["usedPercent"] = "lots"
    bad_plan = json.loads(json.dumps(good))
    bad_plan["rateLimits"]["planType"] = "gold"
    no_rate_limits = {k: v for k, v in good.items() if k != "rateLimits"}
    for bad in (bad_percent, bad_plan, no_rate_limits):
        with pytest.raises(ValidationError):
            read_model.model_validate(bad)


def test_recorded_consume_outcomes_parse(bundle: Generated) -> None:
    consume_model = model_for(bundle, "ConsumeAccountRateLimitResetCreditResponse")
    seen: set[str] = set()
    for sample in recorded(CONSUME):
        parsed = consume_model.model_validate(sample.payload)
        assert on_the_wire(parsed) == sample.payload
        outcome = plain(wire(parsed, "outcome"))
        assert outcome == sample.payload["outcome"]
        seen.add(outcome)
    declared = {
        value
        for branch in bundle.schema["definitions"]["ConsumeAccountRateLimitResetCreditOutcome"]["oneOf"]
        for value in branch["enum"]
    }
    assert seen == declared == {"reset", "nothingToReset", "noCredit", "alreadyRedeemed"}
    with pytest.raises(ValidationError):
        consume_model.model_validate({"outcome": "no_credit"})


def test_recorded_initialize_results_parse(bundle: Generated) -> None:
    initialize_model = model_for(bundle, "InitializeResponse")
    for sample in recorded(INITIALIZE):
        parsed = initialize_model.model_validate(sample.payload)
        assert on_the_wire(parsed) == sample.payload
        assert wire(parsed, "userAgent") == sample.payload["userAgent"]
        assert wire(parsed, "platformFamily") == sample.payload["platformFamily"] == "unix"
        assert wire(parsed, "codexHome") == "<CODEX_HOME>"
    with pytest.raises(ValidationError):
        initialize_model.model_validate({"userAgent": "x", "codexHome": "/h", "platformFamily": "unix"})


def test_recorded_rate_limit_notifications_parse(bundle: Generated) -> None:
    params_model = model_for(bundle, "AccountRateLimitsUpdatedNotification")
    unions = [c for c in _classes(bundle.module) if c.__name__ == "ServerNotification"]
    assert len(unions) == 1, "no generated ServerNotification union"
    notification_union = unions[0]
    for sample in recorded(UPDATED):
        parsed = params_model.model_validate(sample.payload)
        assert on_the_wire(parsed) == sample.payload
        window = sample.payload["rateLimits"]["primary"]
        assert wire(parsed, "rateLimits", "limitId") == sample.payload["rateLimits"]["limitId"]
        if window is not None:
            assert wire(parsed, "rateLimits", "primary", "usedPercent") == window["usedPercent"]
        # The whole line, envelope included, through the ServerNotification union.
        line = json.loads(sample.line)
        envelope = plain(notification_union.model_validate(line))
        assert plain(wire(envelope, "method")) == UPDATED
        assert isinstance(wire(envelope, "params"), params_model)
        assert on_the_wire(wire(envelope, "params")) == sample.payload


# ---------------------------------------------------------------------------------------------------------------------
# Single per-type files, as a client that vendors one file gets them


def test_per_type_read_file_parses_every_recorded_read(per_type_read: Generated) -> None:
    unexpected = [w for w in per_type_read.warnings if w[0] not in KNOWN_WARNINGS]
    assert not unexpected
    read_model = model_for(per_type_read, "GetAccountRateLimitsResponse")
    for sample in recorded(READ):
        parsed = read_model.model_validate(sample.payload)
        assert on_the_wire(parsed) == sample.payload, sample.transcript
        assert plain(wire(parsed, "rateLimits", "limitId")) == sample.payload["rateLimits"]["limitId"]


def _summaries() -> list[ext.AccountSummary]:
    """Pool summaries as the server writes them, built from recorded reads (the pool is ours: no reference traffic)."""
    full = v2.GetAccountRateLimitsResponse.model_validate(
        next(s for s in recorded(READ) if s.transcript == "10_read_full_mapping").payload
    )
    assert full.rate_limit_reset_credits is not None
    active = ext.AccountSummary(
        account_id="work",
        label="Work",
        codex_home="/home/user/.codex-work",
        email="user@example.com",
        plan_type=full.rate_limits.plan_type,
        status=ext.AccountStatus.ACTIVE,
        rate_limits=full.rate_limits,
        rate_limits_by_limit_id=full.rate_limits_by_limit_id,
        reset_credits=ext.ResetCreditsOverview(
            available_count=full.rate_limit_reset_credits.available_count,
            credits=full.rate_limit_reset_credits.credits,
            nearest_expires_at=1783814400,
        ),
        reset_action=ext.ResetAction(enabled=True, warning=ext.APPLY_WARNING),
        pending_apply=ext.PendingApply(idempotency_key="key-1", credit_id="credit-1", started_at=1790000000),
        refreshed_at=1790000001,
    )
    expired = ext.AccountSummary(
        account_id="home",
        label="Home",
        codex_home="/home/user/.codex",
        status=ext.AccountStatus.REAUTH_REQUIRED,
        reset_action=ext.ResetAction(
            enabled=False, disabled_reason=ext.ResetDisabledReason.REAUTH_REQUIRED, warning=ext.APPLY_WARNING
        ),
        error=ext.AccountError(
            code=-32600, message="the saved sign-in expired; run `CODEX_HOME=/home/user/.codex codex login`"
        ),
    )
    return [active, expired]


def test_per_type_summary_file_parses_what_the_server_writes(per_type_summary: Generated) -> None:
    unexpected = [w for w in per_type_summary.warnings if w[0] not in KNOWN_WARNINGS]
    assert not unexpected
    summary_model = model_for(per_type_summary, "AccountSummary")
    summaries = _summaries()
    for summary in summaries:
        payload = json.loads(summary.to_wire())
        parsed = summary_model.model_validate(payload)
        assert on_the_wire(parsed) == payload
        assert plain(wire(parsed, "status")) == summary.status.value
        assert wire(parsed, "resetAction", "warning") == ext.APPLY_WARNING
    active = summary_model.model_validate(json.loads(summaries[0].to_wire()))
    assert wire(active, "rateLimits", "primary", "usedPercent") == 42
    assert wire(active, "pendingApply", "idempotencyKey") == "key-1"
    assert [plain(wire(c, "status")) for c in wire(active, "resetCredits", "credits")] == ["available", "unknown"]
    with pytest.raises(ValidationError):
        summary_model.model_validate({**json.loads(summaries[1].to_wire()), "status": "sleeping"})
