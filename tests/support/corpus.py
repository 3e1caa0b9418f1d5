"""A corpus of hostile input lines and what codex-limits answers to each (data only, no test logic).

Meant to be reused by other bindings and servers: every case is one input line (bytes, without the
terminating newline), the exact answer line it gets (bytes, without the newline) or None when it gets
no answer at all, and a short reason citing CONTRACT.md or one of our documented deviations.

How the cases are run (`tests/app_server/test_corpus.py`):

* the server's `$CODEX_HOME` has no auth.json, so a request that reaches the rate-limit read answers
  `codex account authentication required to read rate limits`, without any HTTP call;
* `PREAMBLE` (a successful `initialize`) comes first, then the case line(s), then `FINAL`, whose answer
  must arrive: no line may break the connection;
* the default line limit (16 MiB) applies;
* `logged` marks the lines that give exactly one WARNING line on stderr (logger `app_server.rpc.dispatcher`):
  every line we drop (upstream drops the same lines, with its own log for the unparsable ones and
  silently for the others), and every over-long line, answered or not. Well-formed notifications and
  client responses are ignored without a warning; answered lines log nothing.

Our deviations from upstream that show here: the unknown-method message lists our methods; a line longer
than the limit gets -32600 when its id can be found (upstream has no limit); dropped lines are logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

OUR_METHODS: Final = (
    "initialize",
    "account/rateLimits/read",
    "account/rateLimitResetCredit/consume",
    "accountPool/list",
    "accountPool/refresh",
    "accountPool/resetCredit/apply",
    "accountPool/history",
    "accountPool/usageHistory",
    "accountPool/forecast",
    "accountPool/resetCredits/list",
)
MAX_LINE: Final = 16 * 1024 * 1024

READ: Final = "account/rateLimits/read"
CONSUME: Final = "account/rateLimitResetCredit/consume"
NO_AUTH_READ: Final = "codex account authentication required to read rate limits"
NO_AUTH_CONSUME: Final = "codex account authentication required for rate limit reset credits"


@dataclass(frozen=True)
class Case:
    name: str
    line: bytes
    """One input line, without the terminating b"\\n"."""
    answer: bytes | None
    """The exact answer line (without b"\\n"), or None: the line is never answered."""
    reason: str
    logged: bool = False
    """True: one WARNING line from logger `app_server.rpc.dispatcher` (dropped lines, over-long lines)."""

    def __repr__(self) -> str:  # the 20 MB lines must not end up in a test report
        return f"Case({self.name!r})"


def error(id_json: str, message: str, code: int = -32600) -> bytes:
    """An error answer: member order `error` (`code`, `message`), then `id` (CONTRACT §1.2)."""
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    return f'{{"error":{{"code":{code},"message":{text}}},"id":{id_json}}}'.encode()


def unknown_method(name: str) -> str:
    expected = ", ".join(f"`{m}`" for m in OUR_METHODS)
    return f"Invalid request: unknown variant `{name}`, expected one of {expected}"


def invalid(detail: str) -> str:
    return f"Invalid request: {detail}"


def answered(name: str, line: bytes, answer: bytes, reason: str, *, logged: bool = False) -> Case:
    return Case(name, line, answer, reason, logged)


def dropped(name: str, line: bytes, reason: str) -> Case:
    return Case(name, line, None, reason, logged=True)


def ignored(name: str, line: bytes, reason: str) -> Case:
    return Case(name, line, None, reason)


def read(id_json: str, params: str | None = '{"excludeResetCreditDetails":true}') -> bytes:
    tail = "" if params is None else f',"params":{params}'
    return f'{{"id":{id_json},"method":"{READ}"{tail}}}'.encode()


def consume(id_json: str, params: str | None) -> bytes:
    tail = "" if params is None else f',"params":{params}'
    return f'{{"id":{id_json},"method":"{CONSUME}"{tail}}}'.encode()


def no_auth(id_json: str) -> bytes:
    return error(id_json, NO_AUTH_READ)


PREAMBLE: Final = (
    b'{"id":"preamble","method":"initialize","params":{"clientInfo":{"name":"corpus","title":null,"version":"1.0"}}}'
)
"""Sent first. Its answer is a result whose `userAgent` depends on the host, so it is not given here."""

FINAL: Final = read('"final"')
FINAL_ANSWER: Final = no_auth('"final"')

PAD: Final = 20 * 1000 * 1000
HUGE_WITH_ID: Final = read('"huge"', '{"excludeResetCreditDetails":true,"pad":"' + "x" * PAD + '"}')
HUGE_ID_AT_END: Final = f'{{"method":"{READ}","params":{{"pad":"'.encode() + b"x" * PAD + b'"},"id":"late"}'
DEEP: Final = 100_000

CASES: Final[tuple[Case, ...]] = (
    # -- not JSON at all (§1.3: dropped, no -32700) --------------------------------------------------------
    dropped("not_json", b"not json", "§1.3 not valid JSON"),
    dropped("truncated_object", read("50")[:-1], "§1.3 truncated object"),
    dropped("two_objects_on_one_line", read("29") + read("30"), "§1.3 two objects on one line"),
    dropped("bom_prefix", b"\xef\xbb\xbf" + read("28"), "§1.3 BOM-prefixed line"),
    dropped("trailing_nul", read("52") + b"\x00", "§1.3 trailing NUL byte"),
    dropped("only_nul_bytes", b"\x00\x00\x00", "NUL bytes are not JSON"),
    dropped(
        "raw_nul_in_string", b'{"id":"a\x00b","method":"nope/x"}', "raw control characters are not allowed in strings"
    ),
    dropped(
        "raw_bell_in_string", b'{"id":"a\x07b","method":"nope/x"}', "raw control characters are not allowed in strings"
    ),
    dropped("empty_line", b"", "§1.3 empty line"),
    dropped("whitespace_only", b"  \t ", "§1.3 whitespace-only line"),
    dropped("form_feed_prefix", b"\x0c" + read("53"), "\\f is not JSON whitespace (serde_json rejects it too)"),
    dropped("vertical_tab_suffix", read("54") + b"\x0b", "\\v is not JSON whitespace"),
    dropped("nbsp_prefix", "\u00a0".encode() + read("55"), "U+00A0 is not JSON whitespace"),
    dropped("single_quotes", b"{'id':58,'method':'nope/x'}", "not JSON"),
    dropped("trailing_comma", b'{"id":59,"method":"nope/x",}', "not JSON"),
    dropped("trailing_comment", b'{"id":60,"method":"nope/x"} // note', "not JSON"),
    dropped("nan_in_params", read("57", '{"x":NaN}'), "NaN is not JSON"),
    dropped("infinity_id", b'{"id":-Infinity,"method":"nope/x"}', "Infinity is not JSON"),
    # -- not UTF-8, or strings that are not Unicode ----------------------------------------------------------
    dropped("invalid_utf8_byte", b'{"id":"\xff","method":"nope/x"}', "invalid UTF-8"),
    dropped("overlong_utf8_encoding", b'{"id":"\xc0\xaf","method":"nope/x"}', "invalid UTF-8 (overlong encoding)"),
    dropped("utf8_encoded_surrogate", b'{"id":"\xed\xa0\x80","method":"nope/x"}', "invalid UTF-8 (CESU surrogate)"),
    dropped("truncated_utf8_sequence", b'{"id":"\xe4\xb8","method":"nope/x"}', "invalid UTF-8 (truncated sequence)"),
    dropped("invalid_utf8_in_params", read("63")[:-2] + b',"x":"\xfe"}}', "invalid UTF-8 anywhere drops the line"),
    dropped(
        "lone_high_surrogate_id", b'{"id":"\\ud800","method":"nope/x"}', "lone surrogate escape (serde rejects it)"
    ),
    dropped("lone_low_surrogate_params", read("56", '{"x":"\\udc00"}'), "lone surrogate escape anywhere"),
    dropped("reversed_surrogate_pair", b'{"id":"\\ude00\\ud83d","method":"nope/x"}', "low then high surrogate"),
    # -- nesting and numbers ---------------------------------------------------------------------------------
    dropped("deeply_nested_array", b"[" * DEEP + b"]" * DEEP, "nesting too deep to parse (serde's limit is 128)"),
    dropped(
        "deeply_nested_params",
        read("61", '{"x":' + "[" * DEEP + "]" * DEEP + "}"),
        "nesting too deep to parse, inside params",
    ),
    answered(
        "moderately_nested_params",
        read("64", '{"x":' + "[" * 100 + "]" * 100 + "}"),
        no_auth("64"),
        "unknown params members are ignored whatever their shape",
    ),
    answered(
        "huge_integer_in_params",
        read("65", '{"excludeResetCreditDetails":123456789012345678901234567890}'),
        error("65", invalid("invalid type: integer `123456789012345678901234567890`, expected a boolean")),
        "§3.1 wrong param type (serde would say floating point; only the prefix is contract)",
    ),
    dropped("id_with_5000_digits", b'{"id":' + b"9" * 5000 + b',"method":"nope/x"}', "not an i64 id (§1.3)"),
    dropped("id_exponent_overflow", b'{"id":1e400,"method":"nope/x"}', "a float id (§1.3)"),
    # -- JSON that is not a message (§1.3) ------------------------------------------------------------------
    dropped("batch", b"[" + read("23") + b"," + read("24") + b"]", "§1.3 batches are not supported"),
    dropped("empty_batch", b"[]", "§1.3"),
    dropped("number", b"1", "§1.3"),
    dropped("string", b'"str"', "§1.3"),
    dropped("null", b"null", "§1.3"),
    dropped("true", b"true", "§1.3"),
    dropped("empty_object", b"{}", "§1.3"),
    dropped("id_only", b'{"id":35}', "§1.3 no method"),
    dropped("method_number", b'{"id":34,"method":5}', "§1.3 method not a string"),
    dropped("method_null", b'{"method":null}', "§1.3"),
    dropped("method_array", b'{"id":66,"method":["nope/x"]}', "method not a string"),
    dropped("method_object", b'{"id":67,"method":{"name":"nope/x"}}', "method not a string"),
    dropped(
        "duplicate_params_key",
        read("42", '{"excludeResetCreditDetails":true},"params":{"excludeResetCreditDetails":false}'),
        "§1.3 duplicated params",
    ),
    dropped(
        "duplicate_method_key", b'{"id":46,"method":"account/rateLimits/read","method":"x"}', "§1.3 duplicated method"
    ),
    dropped("duplicate_id_key", b'{"id":43,"id":44,"method":"nope/x"}', "§1.3 duplicated id"),
    dropped(
        "duplicate_id_key_escaped",
        b'{"id":68,"\\u0069d":69,"method":"nope/x"}',
        "a duplicated id spelled with an escape",
    ),
    answered(
        "duplicate_keys_nested_in_params",
        read("70", '{"x":{"id":1,"id":2,"method":"a","method":"b"}}'),
        no_auth("70"),
        "only the envelope's own keys must be unique; nested objects may repeat keys",
    ),
    # -- ids that do not make a request (§1.3: a notification, not answered) ---------------------------------
    dropped("id_float", read("1.5"), "§1.3"),
    dropped("id_float_integral", read("2.0"), "§1.3"),
    dropped("id_exponent", read("1e3"), "§1.3"),
    dropped("id_null", read("null"), "§1.3"),
    dropped("id_true", read("true"), "§1.3"),
    dropped("id_false", read("false"), "§1.3"),
    dropped("id_above_i64", read("9223372036854775808"), "§1.3"),
    dropped("id_below_i64", read("-9223372036854775809"), "outside i64"),
    dropped("id_above_u64", read("18446744073709551616"), "§1.3"),
    dropped("id_object", read('{"a":1}'), "§1.3"),
    dropped("id_array", read("[1]"), "§1.3"),
    # -- notifications and client responses (§1.3, §2.2: ignored, no log) -------------------------------------
    ignored("initialized_notification", b'{"method":"initialized"}', "§2.2"),
    ignored("initialized_with_params", b'{"method":"initialized","params":{"x":1}}', "§1.3"),
    ignored("unknown_notification", b'{"method":"nope/notify"}', "§1.3"),
    ignored("read_without_id", f'{{"method":"{READ}"}}'.encode(), "§1.3 a read sent as a notification"),
    ignored("client_result", b'{"id":36,"result":{}}', "§1.3 a client response, nothing pending"),
    ignored("client_error", b'{"id":37,"error":{"code":1,"message":"x"}}', "§1.3"),
    # -- ids that are echoed with their JSON type (§1.3) ------------------------------------------------------
    answered("id_string", read('"s1"'), no_auth('"s1"'), "§1.3"),
    answered("id_empty_string", read('""'), no_auth('""'), "§1.3"),
    answered("id_raw_non_ascii", read('"é中😀"'), no_auth('"é中😀"'), "§1.1 raw UTF-8 both ways"),
    answered(
        "id_escaped_non_ascii",
        read('"\\u00e9\\u4e2d\\ud83d\\ude01"'),
        no_auth('"é中😁"'),
        "§1.1 escapes in, raw UTF-8 out (a surrogate pair is one character)",
    ),
    answered(
        "id_escaped_controls", read('"a\\nb\\u0001/"'), no_auth('"a\\nb\\u0001/"'), "§1.1 controls escaped, / not"
    ),
    answered("id_zero", read("0"), no_auth("0"), "§1.3"),
    answered("id_negative", read("-5"), no_auth("-5"), "§1.3"),
    answered("id_i64_max", read("9223372036854775807"), no_auth("9223372036854775807"), "§1.3"),
    answered("id_i64_min", read("-9223372036854775808"), no_auth("-9223372036854775808"), "§1.3"),
    # -- envelope variations that are accepted (§1.1, §1.3) ---------------------------------------------------
    answered("jsonrpc_2_0", b'{"jsonrpc":"2.0","id":20,"method":"' + READ.encode() + b'"}', no_auth("20"), "§1.1"),
    answered("jsonrpc_1_0", b'{"jsonrpc":"1.0","id":21,"method":"' + READ.encode() + b'"}', no_auth("21"), "§1.1"),
    answered("jsonrpc_number", b'{"jsonrpc":5,"id":71,"method":"' + READ.encode() + b'"}', no_auth("71"), "any value"),
    answered("extra_member", read("22")[:-1] + b',"extra":1}', no_auth("22"), "§1.3 extra members"),
    answered(
        "trace_member",
        read("40")[:-1] + b',"trace":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}',
        no_auth("40"),
        "§1.3 trace",
    ),
    answered("crlf", read("25") + b"\r", no_auth("25"), "§1.1 CRLF input"),
    answered("surrounding_blanks", b"   " + read("26") + b" \t ", no_auth("26"), "§1.1"),
    answered(
        "blanks_inside",
        b'\t{ "id" : 27 , "method" : "account/rateLimits/read" , "params" : { } }',
        no_auth("27"),
        "§1.1",
    ),
    # -- methods (§1.3, §3.1) ---------------------------------------------------------------------------------
    answered(
        "method_wrong_case",
        b'{"id":41,"method":"Account/RateLimits/Read"}',
        error("41", unknown_method("Account/RateLimits/Read")),
        "§1.3 case-sensitive; our message lists our methods",
    ),
    answered(
        "unknown_method",
        b'{"id":47,"method":"nope/nope","params":{}}',
        error("47", unknown_method("nope/nope")),
        "§3.1",
    ),
    answered("empty_method", b'{"id":72,"method":""}', error("72", unknown_method("")), "§3.1"),
    answered(
        "non_ascii_method", '{"id":73,"method":"méthode/ü"}'.encode(), error("73", unknown_method("méthode/ü")), "§1.1"
    ),
    answered(
        "method_with_newline", b'{"id":74,"method":"a\\nb"}', error("74", unknown_method("a\nb")), "escaped on output"
    ),
    answered(
        "initialized_with_id",
        b'{"id":75,"method":"initialized"}',
        error("75", unknown_method("initialized")),
        "a notification name",
    ),
    # -- read params (§4.1, §3.1) -----------------------------------------------------------------------------
    answered("read_params_null", read("76", "null"), no_auth("76"), "§4.1"),
    answered("read_params_absent", read("77", None), no_auth("77"), "§4.1"),
    answered("read_params_unknown_member", read("78", '{"nope":1}'), no_auth("78"), "§4.1"),
    answered("read_params_empty_array", read("79", "[]"), no_auth("79"), "§4.1 quirk: positional"),
    answered("read_params_array", read("80", "[true]"), no_auth("80"), "§4.1 quirk: positional"),
    answered(
        "read_params_string",
        read("81", '"x"'),
        error("81", invalid('invalid type: string "x", expected struct GetAccountRateLimitsParams')),
        "§3.1",
    ),
    answered(
        "read_params_integer",
        read("82", "5"),
        error("82", invalid("invalid type: integer `5`, expected struct GetAccountRateLimitsParams")),
        "§3.1",
    ),
    answered(
        "read_params_boolean",
        read("83", "true"),
        error("83", invalid("invalid type: boolean `true`, expected struct GetAccountRateLimitsParams")),
        "§3.1",
    ),
    answered(
        "read_params_float",
        read("84", "1.5"),
        error("84", invalid("invalid type: floating point `1.5`, expected struct GetAccountRateLimitsParams")),
        "§3.1",
    ),
    answered(
        "read_member_string",
        read("6", '{"excludeResetCreditDetails":"x"}'),
        error("6", invalid('invalid type: string "x", expected a boolean')),
        "§3.1 (transcript 02)",
    ),
    answered(
        "read_member_null",
        read("85", '{"supportsLunaReserve":null}'),
        error("85", invalid("invalid type: null, expected a boolean")),
        "§4.1 null is rejected",
    ),
    answered(
        "read_member_integer",
        read("86", '{"supportsLunaReserve":1}'),
        error("86", invalid("invalid type: integer `1`, expected a boolean")),
        "§4.1",
    ),
    answered(
        "read_params_long_array",
        read("87", "[true,true,true]"),
        error("87", invalid("invalid length 3, expected struct GetAccountRateLimitsParams with 2 elements")),
        "§4.1 quirk: positional, too long",
    ),
    # -- consume params (§5.1, §3.1, D6: checked before queueing) ---------------------------------------------
    answered("consume_params_absent", consume("88", None), error("88", invalid("missing field `params`")), "§5.1"),
    answered("consume_params_null", consume("89", "null"), error("89", invalid("missing field `params`")), "§5.1"),
    answered("consume_params_empty", consume("3", "{}"), error("3", invalid("missing field `idempotencyKey`")), "§3.1"),
    answered(
        "consume_snake_case_key",
        consume("90", '{"idempotency_key":"k"}'),
        error("90", invalid("missing field `idempotencyKey`")),
        "§3.1 camelCase only",
    ),
    answered(
        "consume_key_integer",
        consume("91", '{"idempotencyKey":123}'),
        error("91", invalid("invalid type: integer `123`, expected a string")),
        "§3.1",
    ),
    answered(
        "consume_key_null",
        consume("92", '{"idempotencyKey":null}'),
        error("92", invalid("invalid type: null, expected a string")),
        "§5.1",
    ),
    answered(
        "consume_key_boolean",
        consume("93", '{"idempotencyKey":true}'),
        error("93", invalid("invalid type: boolean `true`, expected a string")),
        "§5.1",
    ),
    answered(
        "consume_credit_id_integer",
        consume("94", '{"idempotencyKey":"k","creditId":5}'),
        error("94", invalid("invalid type: integer `5`, expected a string")),
        "§5.1",
    ),
    answered(
        "consume_params_string",
        consume("95", '"k"'),
        error("95", invalid('invalid type: string "k", expected struct ConsumeAccountRateLimitResetCreditParams')),
        "§3.1",
    ),
    answered(
        "consume_params_empty_array",
        consume("96", "[]"),
        error(
            "96", invalid("invalid length 0, expected struct ConsumeAccountRateLimitResetCreditParams with 2 elements")
        ),
        "§3.1 quirk",
    ),
    answered(
        "consume_params_short_array",
        consume("97", '["k"]'),
        error(
            "97", invalid("invalid length 1, expected struct ConsumeAccountRateLimitResetCreditParams with 2 elements")
        ),
        "§5.1 quirk",
    ),
    answered(
        "consume_empty_key",
        consume("5", '{"idempotencyKey":""}'),
        error("5", "idempotencyKey must not be empty"),
        "§3.1 (D6: answered before queueing)",
    ),
    answered(
        "consume_empty_credit_id",
        consume("98", '{"idempotencyKey":"k","creditId":""}'),
        error("98", "creditId must not be empty"),
        "§3.1",
    ),
    answered(
        "consume_both_empty",
        consume("99", '{"idempotencyKey":"","creditId":""}'),
        error("99", "idempotencyKey must not be empty"),
        "§3.2 the key is checked first",
    ),
    answered(
        "consume_blank_key_reaches_auth",
        consume("100", '{"idempotencyKey":" "}'),
        error("100", NO_AUTH_CONSUME),
        "§5.1 only exactly empty is refused; then §8.1",
    ),
    # -- initialize on an initialized connection (§2.2) ------------------------------------------------------
    answered(
        "initialize_again",
        b'{"id":7,"method":"initialize","params":{"clientInfo":{"name":"probe","title":null,"version":"1.0"}}}',
        error("7", "Already initialized"),
        "§2.2",
    ),
    answered(
        "initialize_again_malformed",
        b'{"id":8,"method":"initialize","params":{}}',
        error("8", invalid("missing field `clientInfo`")),
        "§2.2 a malformed second initialize gets its parse error",
    ),
    answered(
        "initialize_again_without_params",
        b'{"id":9,"method":"initialize"}',
        error("9", invalid("missing field `params`")),
        "§2.1",
    ),
    # -- our extension methods: the same parsing rules --------------------------------------------------------
    answered(
        "pool_refresh_without_params",
        b'{"id":101,"method":"accountPool/refresh"}',
        error("101", invalid("missing field `params`")),
        "params required",
    ),
    answered(
        "pool_list_params_integer",
        b'{"id":102,"method":"accountPool/list","params":5}',
        error("102", invalid("invalid type: integer `5`, expected struct AccountPoolListParams")),
        "§3.1 wording",
    ),
    answered(
        "pool_history_limit_float",
        b'{"id":103,"method":"accountPool/history","params":{"limit":1.5}}',
        error("103", invalid("invalid type: floating point `1.5`, expected i64")),
        "§3.1 wording",
    ),
    answered(
        "pool_apply_empty_key",
        b'{"id":104,"method":"accountPool/resetCredit/apply","params":{"accountId":"a","idempotencyKey":""}}',
        error("104", "idempotencyKey must not be empty"),
        "checked before anything else runs",
    ),
    # -- over-long lines (our deviation: upstream has no limit) -----------------------------------------------
    answered(
        "line_of_20_mb_with_id",
        HUGE_WITH_ID,
        error('"huge"', invalid(f"message of {len(HUGE_WITH_ID)} bytes exceeds the {MAX_LINE}-byte line limit")),
        "over the limit: answered -32600 when the id is near the start",
        logged=True,
    ),
    dropped("line_of_20_mb_id_at_end", HUGE_ID_AT_END, "over the limit and no id in the kept prefix: skipped"),
)
