//! OpenAI (and Azure OpenAI) specifics: `x-ratelimit-*` headers and error
//! codes.

use std::time::Duration;

use http::HeaderMap;

use super::classify::ErrorKind;
use super::parse::{self, NANOS_PER_SEC};
use super::quota::{Quota, QuotaSnapshot, bounded_reset};

/// A reset: a Go duration (`6m0s`), or a bare decimal number of seconds as
/// some compatible gateways send. An epoch timestamp in seconds is far past
/// [`MAX_RESET`](super::MAX_RESET), and so kept as that (too long).
fn reset(value: &str) -> Option<Duration> {
    parse::go_duration(value)
        .or_else(|| parse::decimal(value, NANOS_PER_SEC).and_then(parse::nanos_to_duration))
        .map(bounded_reset)
}

fn read_one(headers: &HeaderMap, [limit, remaining, reset_name]: [&str; 3]) -> Option<Quota> {
    Quota {
        // Azure's "-1" (unknown) fails `parse_u64` and so is `None`.
        limit: parse::single(headers, limit).and_then(parse::parse_u64),
        remaining: parse::single(headers, remaining).and_then(parse::parse_u64),
        reset: parse::single(headers, reset_name).and_then(reset),
    }
    .non_empty()
}

/// Fills `requests` and `tokens` from `x-ratelimit-*` where Anthropic's
/// headers left them empty, and `combined_tokens` (OpenAI's own: input +
/// output against one limit) from `x-ratelimit-*-tokens` always.
pub(crate) fn read_quotas(headers: &HeaderMap, snapshot: &mut QuotaSnapshot) {
    let requests = read_one(
        headers,
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ],
    );
    let tokens = read_one(
        headers,
        [
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ],
    );
    snapshot.families.openai = requests.is_some() || tokens.is_some();
    snapshot.combined_tokens = tokens;
    if snapshot.requests.is_none() {
        snapshot.requests = requests;
    }
    if snapshot.tokens.is_none() {
        snapshot.tokens = tokens;
    }
}

/// The kind an OpenAI `error.code` (or, for `insufficient_quota`,
/// `error.type`) names regardless of status.
pub(crate) fn kind_for_code(code: &str) -> Option<ErrorKind> {
    Some(match code {
        "insufficient_quota" | "billing_hard_limit_reached" => ErrorKind::QuotaExhausted,
        "context_length_exceeded" => ErrorKind::ContextLength,
        "invalid_api_key" => ErrorKind::Authentication,
        "rate_limit_exceeded" => ErrorKind::RateLimited,
        "model_not_found" => ErrorKind::NotFound,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
