// Type-checks recorded server answers against the types that generate.mjs compiles from schemas/json.
// `npm run check` = generate + `tsc --strict --noEmit`; CI runs it through run-check.sh.
//
// Each literal introduced by a transcript name is a value the reference server printed in shared/contract/transcripts
// (transcript and request id noted): the compact ones are the recorded bytes, the indented one the same value laid out.
// Nothing here runs: it only has to compile.
import type * as Bundle from "./out/codex_app_server_protocol";
import type { AccountSummary as ExtAccountSummary } from "./out/ext/AccountSummary";
import type { InitializeResponse as V1InitializeResponse } from "./out/v1/InitializeResponse";
import type { AccountRateLimitsUpdatedNotification as V2Updated } from "./out/v2/AccountRateLimitsUpdatedNotification";
import type { ConsumeAccountRateLimitResetCreditResponse as V2Consume } from "./out/v2/ConsumeAccountRateLimitResetCreditResponse";
import type { GetAccountRateLimitsResponse as V2Read } from "./out/v2/GetAccountRateLimitsResponse";

// 10_read_full_mapping, id 1 ("all fields, details fetched").
export const recordedRead: Bundle.GetAccountRateLimitsResponse = {"ordinaryUsageAllowed":true,"rateLimits":{"limitId":"codex","limitName":null,"normalModelSlug":null,"primary":{"usedPercent":42,"windowDurationMins":60,"resetsAt":1790000000},"secondary":{"usedPercent":5,"windowDurationMins":1440,"resetsAt":1790100000},"credits":{"hasCredits":false,"unlimited":false,"balance":"0"},"individualLimit":{"limit":"25000","used":"8000","remainingPercent":68,"resetsAt":1790000000},"spendControlReached":true,"planType":"pro","rateLimitReachedType":"workspace_member_usage_limit_reached"},"rateLimitsByLimitId":{"codex_bengalfox":{"limitId":"codex_bengalfox","limitName":"GPT-5.3-Codex-Spark","normalModelSlug":"gpt-5.3-codex","primary":{"usedPercent":88,"windowDurationMins":30,"resetsAt":1790000500},"secondary":null,"credits":null,"individualLimit":null,"spendControlReached":null,"planType":"pro","rateLimitReachedType":null},"codex":{"limitId":"codex","limitName":null,"normalModelSlug":null,"primary":{"usedPercent":42,"windowDurationMins":60,"resetsAt":1790000000},"secondary":{"usedPercent":5,"windowDurationMins":1440,"resetsAt":1790100000},"credits":{"hasCredits":false,"unlimited":false,"balance":"0"},"individualLimit":{"limit":"25000","used":"8000","remainingPercent":68,"resetsAt":1790000000},"spendControlReached":true,"planType":"pro","rateLimitReachedType":"workspace_member_usage_limit_reached"}},"rateLimitResetCredits":{"availableCount":2,"credits":[{"id":"credit-1","resetType":"codexRateLimits","status":"available","grantedAt":1781222400,"expiresAt":1783814400,"title":"Full reset","description":"Ready"},{"id":"credit-2","resetType":"unknown","status":"unknown","grantedAt":1781308800,"expiresAt":null,"title":null,"description":null}]},"accountId":"account-123","rateLimitUpsell":{"banner_type":"upsell","title":"T","cta":{"label":"Go","url":"https://example.com/upgrade"}}};

// The per-type file's module must describe the same value.
export const recordedReadPerType: V2Read = recordedRead;

// 10_read_full_mapping, id 0.
export const recordedInitialize: Bundle.InitializeResponse = {"userAgent":"probe/0.169.0 (<OS_TYPE> <OS_VERSION>; <ARCH>) xterm (probe; 1.0)","codexHome":"<CODEX_HOME>","platformFamily":"unix","platformOs":"linux"};
export const recordedInitializePerType: V1InitializeResponse = recordedInitialize;

// 30_consume_outcomes_and_params, ids 1 to 4: every outcome.
export const recordedConsumes: Bundle.ConsumeAccountRateLimitResetCreditResponse[] = [
  {"outcome":"reset"},
  {"outcome":"nothingToReset"},
  {"outcome":"noCredit"},
  {"outcome":"alreadyRedeemed"},
];
export const recordedConsumesPerType: V2Consume[] = recordedConsumes;

// 50_rate_limits_updated_notification, the first account/rateLimits/updated: its params.
export const recordedUpdated: Bundle.AccountRateLimitsUpdatedNotification = {"rateLimits":{"limitId":"codex","limitName":null,"normalModelSlug":null,"primary":{"usedPercent":26,"windowDurationMins":15,"resetsAt":1790000000},"secondary":{"usedPercent":5,"windowDurationMins":1440,"resetsAt":1790100000},"credits":{"hasCredits":true,"unlimited":false,"balance":"12.5"},"individualLimit":null,"spendControlReached":null,"planType":null,"rateLimitReachedType":null}};
export const recordedUpdatedPerType: V2Updated = recordedUpdated;

// An ext type, built from the recorded read (the pool's summaries are not in the reference transcripts).
export const summary: ExtAccountSummary = {
  accountId: "work",
  label: "Work",
  codexHome: "/home/user/.codex-work",
  email: null,
  planType: recordedRead.rateLimits.planType,
  status: "active",
  rateLimits: recordedRead.rateLimits,
  rateLimitsByLimitId: recordedRead.rateLimitsByLimitId,
  resetCredits: { availableCount: 2, credits: recordedRead.rateLimitResetCredits?.credits ?? null, nearestExpiresAt: 1783814400 },
  resetAction: { enabled: true, disabledReason: null, warning: "Applying consumes one saved rate-limit reset on this account and cannot be undone." },
  pendingApply: null,
  refreshedAt: 1790000000,
  error: null,
};
export const summaryInBundle: Bundle.AccountSummary = summary;

// The generated types are not vacuous: each value below is wrong, and tsc must say so
// (an unused @ts-expect-error is itself an error, so this section fails if a type turns into `unknown`).
// @ts-expect-error usedPercent is a number.
export const badWindow: Bundle.RateLimitWindow = { usedPercent: "42", windowDurationMins: 60, resetsAt: 1790000000 };
// @ts-expect-error not an outcome.
export const badOutcome: Bundle.ConsumeAccountRateLimitResetCreditResponse = { outcome: "bogus" };
// @ts-expect-error rateLimits is required.
export const missingRateLimits: Bundle.GetAccountRateLimitsResponse = { accountId: "account-123" };
// @ts-expect-error misspelled member.
export const misspelled: Bundle.RateLimitSnapshot = { limitId: "codex", planTyp: "pro" };
// @ts-expect-error rateLimitsByLimitId holds snapshots.
export const badMapValue: Bundle.GetAccountRateLimitsResponse = { rateLimits: {}, rateLimitsByLimitId: { codex: { planType: "gold" } } };
// @ts-expect-error planType is one of PlanType.
export const badPlan: V2Read = { rateLimits: { planType: "gold" } };
// @ts-expect-error the params of account/rateLimits/updated are not an AccountUpdatedNotification.
export const mismatchedNotification: Bundle.ServerNotification = { method: "account/rateLimits/updated", params: { account: summary } };

// rateLimitUpsell holds any JSON value; the recorded `null` must compile (the schema lists every JSON type).
// 10_read_full_mapping, id 3 ("minimal usage (plan_type only)").
export const recordedReadWithoutBanner: Bundle.GetAccountRateLimitsResponse = {
  "ordinaryUsageAllowed": null,
  "rateLimits": {
    "limitId": "codex",
    "limitName": null,
    "normalModelSlug": null,
    "primary": null,
    "secondary": null,
    "credits": null,
    "individualLimit": null,
    "spendControlReached": null,
    "planType": "plus",
    "rateLimitReachedType": null
  },
  "rateLimitsByLimitId": {
    "codex": {
      "limitId": "codex",
      "limitName": null,
      "normalModelSlug": null,
      "primary": null,
      "secondary": null,
      "credits": null,
      "individualLimit": null,
      "spendControlReached": null,
      "planType": "plus",
      "rateLimitReachedType": null
    }
  },
  "rateLimitResetCredits": null,
  "accountId": null,
  "rateLimitUpsell": null
};

// Every server notification carries a top-level `emittedAtMs`, declared by the ServerNotification variants.
// 50_rate_limits_updated_notification, the same notification as above, whole.
export const recordedNotification: Bundle.ServerNotification = {
  "method": "account/rateLimits/updated",
  "params": {"rateLimits":{"limitId":"codex","limitName":null,"normalModelSlug":null,"primary":{"usedPercent":26,"windowDurationMins":15,"resetsAt":1790000000},"secondary":{"usedPercent":5,"windowDurationMins":1440,"resetsAt":1790100000},"credits":{"hasCredits":true,"unlimited":false,"balance":"12.5"},"individualLimit":null,"spendControlReached":null,"planType":null,"rateLimitReachedType":null}},
  "emittedAtMs": 1795312262024
};
