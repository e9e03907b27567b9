//! Numbers: validated where only their presence counts, read exactly for
//! the `u64` fields and for `temperature`.

use super::Scanner;

/// The longest number (in bytes) accepted where its value is not read.
const MAX_NUMBER_LEN: usize = 100;

/// The largest significand of `temperature` read: every integer up to it
/// is an exact `f64`.
const MAX_EXACT: u64 = 1 << 53;

/// Exactly representable powers of ten, for `temperature`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl<'a> Scanner<'a> {
    /// Any number, validated; its value is not read. Stricter than JSON
    /// where serde_json could refuse it as out of `f64` range.
    pub(super) fn number(&mut self) -> Option<()> {
        let start = self.i;
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        match self.b.get(self.i).copied()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let int_digits = self.i - int_start;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            let at = self.i;
            self.digits();
            if self.i == at {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            let negative = match self.b.get(self.i) {
                Some(b'-') => {
                    self.i += 1;
                    true
                }
                Some(b'+') => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let at = self.i;
            self.digits();
            let exp = self.b.get(at..self.i)?;
            if exp.is_empty() || exp.len() > 3 {
                return None;
            }
            let exp = exp.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
            let exp = if negative { -exp } else { exp };
            if int_digits as i64 + exp > 300 {
                return None;
            }
        }
        if self.i - start > MAX_NUMBER_LEN {
            return None;
        }
        // serde_json refuses a digit after a leading zero.
        match self.b.get(self.i) {
            Some(b'0'..=b'9') => None,
            _ => Some(()),
        }
    }

    #[inline]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// A `u64` field: a plain non-negative integer, as serde_json's
    /// `deserialize_u64` accepts it.
    pub(super) fn uint(&mut self) -> Option<u64> {
        let n: u64 = match self.b.get(self.i).copied()? {
            b'0' => {
                self.i += 1;
                0
            }
            c @ b'1'..=b'9' => {
                self.i += 1;
                let mut n = u64::from(c - b'0');
                while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
                    n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                    self.i += 1;
                }
                n
            }
            _ => return None,
        };
        match self.b.get(self.i) {
            Some(b'0'..=b'9' | b'.' | b'e' | b'E') => None,
            _ => Some(n),
        }
    }

    /// `temperature`: `-`? digits (`.` digits)?, no exponent, a significand
    /// (all digits, the point dropped) of at most 2^53 and at most 22
    /// fraction digits. Computed as serde_json does (`significand as f64 /
    /// 10^k`, both exact, so one correctly rounded division), which is also
    /// what its `float_roundtrip` feature gives: the correctly rounded value.
    pub(super) fn simple_f64(&mut self) -> Option<f64> {
        let negative = self.b.get(self.i) == Some(&b'-');
        if negative {
            self.i += 1;
        }
        let start = self.i;
        match self.b.get(self.i).copied()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut frac = 0usize;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            let at = self.i;
            self.digits();
            frac = self.i - at;
            if frac == 0 {
                return None;
            }
        }
        if let Some(b'0'..=b'9' | b'e' | b'E') = self.b.get(self.i) {
            return None;
        }
        if frac > 22 {
            return None;
        }
        let mut sig = 0u64;
        for &d in self.b.get(start..self.i)? {
            if d != b'.' {
                sig = sig.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            }
        }
        if sig > MAX_EXACT {
            return None;
        }
        let f = sig as f64 / *POW10.get(frac)?;
        Some(if negative { -f } else { f })
    }
}
