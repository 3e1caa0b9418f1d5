"""Exported schemas: no drift from the models, agreement with upstream, and the recorded traffic validates."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from protocol import schema
from tests.support.schema_shape import shape
from tests.support.transcripts import REPO_ROOT
from tests.support.wire_samples import samples

SCHEMAS = REPO_ROOT / "schemas" / "json"
UPSTREAM = REPO_ROOT / "tests" / "fixtures" / "upstream-schemas"
RELEASE = UPSTREAM / "0.169.0"
UPSTREAM_VERSIONS = ["0.169.0", "0.171.0", "pr28143", "2026-08-15"]

RESULT_FILES = {
    "initialize": "v1/InitializeResponse.json",
    "account/rateLimits/read": "v2/GetAccountRateLimitsResponse.json",
    "account/rateLimitResetCredit/consume": "v2/ConsumeAccountRateLimitResetCreditResponse.json",
    "account/rateLimits/updated": "v2/AccountRateLimitsUpdatedNotification.json",
}

UPSTREAM_FILES = sorted(
    p.relative_to(RELEASE).as_posix() for p in RELEASE.rglob("*.json") if not p.name.startswith("codex_app_server")
)


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_committed_schemas_match_the_models() -> None:
    drift = schema.check(SCHEMAS)
    assert not drift, f"schemas/json is out of date ({', '.join(drift)}); run: codex-limits schema --out schemas/json"


def test_check_reports_a_modified_file(tmp_path: Path) -> None:
    schema.write(tmp_path)
    target = tmp_path / "v2" / "GetAccountRateLimitsResponse.json"
    target.write_text(target.read_text() + " ", encoding="utf-8")
    (tmp_path / "stale.json").write_text("{}", encoding="utf-8")
    assert schema.check(tmp_path) == ["v2/GetAccountRateLimitsResponse.json", "stale.json"]


def test_files_use_upstream_format() -> None:
    for path in SCHEMAS.rglob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert not text.endswith("\n"), path
        data = json.loads(text)
        assert data["$schema"] == "http://json-schema.org/draft-07/schema#"
        assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False), path
        jsonschema.Draft7Validator.check_schema(data)


RELEASES = ["0.169.0", "0.171.0"]


def test_both_releases_hold_the_same_surface() -> None:
    for release in RELEASES:
        files = {p.relative_to(UPSTREAM / release).as_posix() for p in (UPSTREAM / release).rglob("*.json")}
        assert set(UPSTREAM_FILES) <= files, release


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("rel", UPSTREAM_FILES)
def test_exported_file_agrees_with_upstream(rel: str, release: str) -> None:
    ours = _load(SCHEMAS / rel)
    theirs = _load(UPSTREAM / release / rel)
    assert shape(ours, ours) == shape(theirs, theirs)


def test_shape_comparison_sees_a_difference() -> None:
    theirs = _load(RELEASE / "v2/GetAccountRateLimitsResponse.json")
    mutations: list[Callable[[Any], Any]] = [
        lambda s: s["definitions"]["RateLimitWindow"]["required"].append("resetsAt"),
        lambda s: s["definitions"]["PlanType"]["enum"].remove("sci"),
        lambda s: s["definitions"]["CreditsSnapshot"]["properties"]["balance"].update(type="string"),
        lambda s: s["properties"].pop("accountId"),
    ]
    for mutate in mutations:
        changed = copy.deepcopy(theirs)
        mutate(changed)
        assert shape(changed, changed) != shape(theirs, theirs)


def test_extension_types_stay_out_of_v2() -> None:
    ext_files = {p.name for p in (SCHEMAS / "ext").glob("*.json")}
    v2_files = {p.name for p in (SCHEMAS / "v2").glob("*.json")}
    assert "AccountSummary.json" in ext_files
    assert not ext_files & v2_files
    assert all(not name.startswith("AccountPool") for name in v2_files)


RECORDED = [s for s in samples() if s.kind in RESULT_FILES]


def test_recorded_traffic_is_found() -> None:
    kinds = {s.kind for s in RECORDED}
    assert kinds == set(RESULT_FILES)
    assert len(RECORDED) > 300


def _plans(payload: Any) -> set[str]:
    if isinstance(payload, dict):
        found = {payload["planType"]} if isinstance(payload.get("planType"), str) else set()
        return found.union(*(_plans(v) for v in payload.values()))
    return set()


@pytest.mark.parametrize("version", ["ours", *UPSTREAM_VERSIONS])
def test_recorded_answers_validate(version: str) -> None:
    root = SCHEMAS if version == "ours" else UPSTREAM / version
    read_schema = _load(root / RESULT_FILES["account/rateLimits/read"])
    known_plans = set(read_schema["definitions"]["PlanType"]["enum"])
    release_schema = _load(RELEASE / RESULT_FILES["account/rateLimits/read"])
    newer_plans = set(release_schema["definitions"]["PlanType"]["enum"]) - known_plans
    checked = 0
    for kind, rel in RESULT_FILES.items():
        path = root / rel
        if not path.exists():
            continue
        validator = jsonschema.Draft7Validator(_load(path))
        for sample in RECORDED:
            if sample.kind == kind:
                # Older schemas predate the plans 0.169.0 added; only those answers are exempt.
                if not _plans(sample.payload) <= known_plans:
                    assert _plans(sample.payload) - known_plans <= newer_plans
                    continue
                errors = list(validator.iter_errors(sample.payload))
                assert not errors, f"{sample.transcript}: {errors[0].message}"
                checked += 1
    assert checked > 0


def test_invalid_answer_is_rejected_by_our_schema() -> None:
    read = next(s.payload for s in RECORDED if s.kind == "account/rateLimits/read")
    broken = copy.deepcopy(read)
    broken["rateLimits"]["primary"]["usedPercent"] = "42"
    validator = jsonschema.Draft7Validator(_load(SCHEMAS / RESULT_FILES["account/rateLimits/read"]))
    assert list(validator.iter_errors(broken))


def test_bundle_holds_every_method_and_notification() -> None:
    bundle = _load(SCHEMAS / schema.BUNDLE_NAME)
    requests = {b["properties"]["method"]["const"] for b in bundle["definitions"]["ClientRequest"]["oneOf"]}
    assert {"initialize", "account/rateLimits/read", "accountPool/resetCredit/apply"} <= requests
    notes = {b["properties"]["method"]["const"] for b in bundle["definitions"]["ServerNotification"]["oneOf"]}
    assert notes == {"account/rateLimits/updated", "accountPool/accountUpdated", "accountPool/alert"}
    validator = jsonschema.Draft7Validator({**bundle, "$ref": "#/definitions/GetAccountRateLimitsResponse"})
    read = next(s.payload for s in RECORDED if s.kind == "account/rateLimits/read")
    assert not list(validator.iter_errors(read))
