//! Anthropic Messages API specifics: `anthropic-ratelimit-*` headers and
//! error types.

use http::HeaderMap;

use super::classify::ErrorKind;
use super::parse;
use super::quota::{Quota, QuotaSnapshot, bounded_reset};

/// (limit, remaining, reset) header names per dimension.
const DIMENSIONS: [[&str; 3]; 4] = [
    [
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ],
    [
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ],
    [
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ],
    [
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ],
];

fn read_one(
    headers: &HeaderMap,
    [limit, remaining, reset]: [&str; 3],
    reference: i128,
) -> Option<Quota> {
    Quota {
        limit: parse::single(headers, limit).and_then(parse::parse_u64),
        remaining: parse::single(headers, remaining).and_then(parse::parse_u64),
        reset: parse::single(headers, reset)
            .and_then(parse::rfc3339)
            .and_then(|at| parse::until(at, reference))
            .map(bounded_reset),
    }
    .non_empty()
}

/// Fills the four dimensions from `anthropic-ratelimit-*`; `reference` is
/// the instant resets are measured from (Unix nanoseconds).
pub(crate) fn read_quotas(headers: &HeaderMap, reference: i128, snapshot: &mut QuotaSnapshot) {
    let [requests, tokens, input, output] = DIMENSIONS;
    snapshot.requests = read_one(headers, requests, reference);
    snapshot.tokens = read_one(headers, tokens, reference);
    snapshot.input_tokens = read_one(headers, input, reference);
    snapshot.output_tokens = read_one(headers, output, reference);
    snapshot.families.anthropic = snapshot.requests.is_some()
        || snapshot.tokens.is_some()
        || snapshot.input_tokens.is_some()
        || snapshot.output_tokens.is_some();
}

/// The kind an Anthropic `error.type` names on its own, for the types that
/// only Anthropic uses. `invalid_request_error` is shared with OpenAI (which
/// uses it for 401s and 404s too), so it is left to the status.
pub(crate) fn kind_for_type(error_type: &str) -> Option<ErrorKind> {
    Some(match error_type {
        "rate_limit_error" => ErrorKind::RateLimited,
        "overloaded_error" => ErrorKind::Overloaded,
        "api_error" => ErrorKind::Server,
        "authentication_error" => ErrorKind::Authentication,
        "permission_error" => ErrorKind::Permission,
        "not_found_error" => ErrorKind::NotFound,
        "request_too_large" => ErrorKind::RequestTooLarge,
        _ => return None,
    })
}

/// `error.details.error_code` of a monthly spend cap: a billing stop.
pub(crate) const SPEND_LIMIT: &str = "enforced_spend_limit_reached";

#[cfg(test)]
mod tests;
