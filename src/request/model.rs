//! The bound on a model name that the crate keeps or echoes.
//!
//! A request's `model` is whatever its body says, of any length. The rate
//! limiter keys groups by it, the fallback layer cools it down and echoes it
//! in `x-llm-model-used` / `x-llm-original-model`: kept as it is, a flood
//! of megabyte-long names would fill those maps and headers. No provider
//! names a model with more than a few dozen bytes, so the rule is:
//!
//! - a name of at most [`MAX_MODEL_NAME`] bytes is kept unchanged;
//! - a longer one is kept as its first bytes (at most 239, cut back to a
//!   character boundary), `#`, and the 16 lowercase hex digits of the XXH3
//!   of the whole name — at most [`MAX_MODEL_NAME`] bytes, and two long
//!   names stay apart unless their 64-bit hashes collide.
//!
//! The request itself is sent upstream unchanged (the provider answers an
//! unknown model with its own error); only what the layers keep is bounded.

use std::fmt::Write as _;
use std::sync::Arc;

/// The longest model name kept or echoed as it is, in bytes.
///
/// Wherever a layer keeps a model name (rate-limit groups, fallback
/// cooldowns) or echoes it (`x-llm-model-used`, `x-llm-original-model`), a
/// longer one is kept as its first bytes (at most 239, cut back to a
/// character boundary), `#`, and the 16 lowercase hex digits of the XXH3 of
/// the whole name. The request itself is sent unchanged.
pub const MAX_MODEL_NAME: usize = 256;

/// `#` and 16 hex digits.
#[cfg_attr(
    not(any(feature = "rate", feature = "fallback", feature = "budget")),
    allow(dead_code)
)]
const SUFFIX: usize = 17;

/// `name` under the bound: the same `Arc` when short enough (no
/// allocation), else its truncated-and-hashed form.
#[cfg_attr(
    not(any(feature = "rate", feature = "fallback", feature = "budget")),
    allow(dead_code)
)]
pub(crate) fn bounded_model(name: &Arc<str>) -> Arc<str> {
    if name.len() <= MAX_MODEL_NAME {
        return Arc::clone(name);
    }
    let mut cut = MAX_MODEL_NAME - SUFFIX;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(MAX_MODEL_NAME);
    out.push_str(&name[..cut]);
    let _ = write!(out, "#{:016x}", xxhash_rust::xxh3::xxh3_64(name.as_bytes()));
    Arc::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_names_are_kept_as_they_are() {
        let name: Arc<str> = Arc::from("claude-sonnet-4-5");
        assert!(Arc::ptr_eq(&bounded_model(&name), &name));
        let edge: Arc<str> = Arc::from("m".repeat(MAX_MODEL_NAME));
        assert!(Arc::ptr_eq(&bounded_model(&edge), &edge));
    }

    proptest! {
        /// Every result is within the bound and a function of the name;
        /// long names keep a prefix and differ when they differ.
        #[test]
        fn bounded_model_is_bounded_and_distinguishes(
            a in "\\PC{0,400}", b in "\\PC{0,400}",
        ) {
            let (fa, fb) = (bounded_model(&Arc::from(a.as_str())), bounded_model(&Arc::from(b.as_str())));
            prop_assert!(fa.len() <= MAX_MODEL_NAME);
            prop_assert!(fb.len() <= MAX_MODEL_NAME);
            if a.len() <= MAX_MODEL_NAME {
                prop_assert_eq!(&*fa, a.as_str());
            } else {
                prop_assert!(a.starts_with(&fa[..fa.len() - SUFFIX]));
                prop_assert!(fa.len() > MAX_MODEL_NAME - SUFFIX - 4);
            }
            prop_assert_eq!(a == b, fa == fb);
        }
    }
}
