//! Money as integer micro-dollars; decimal strings (`"1.25"`) only at the API edge.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Micro-dollars per dollar.
pub const MICROS_PER_USD: u64 = 1_000_000;

/// An amount of US dollars in integer micro-dollars. Never a float.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Usd(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("expected a decimal amount of US dollars such as \"1.25\", got {0:?}")]
    Syntax(String),
    #[error("at most 6 decimal places (micro-dollars) are allowed, got {0:?}")]
    TooPrecise(String),
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

impl Usd {
    pub const ZERO: Usd = Usd(0);

    pub fn micros(self) -> u64 {
        self.0
    }

    /// Parses a non-negative decimal dollar string: `"1"`, `"1.25"`, `"0.000001"`.
    pub fn parse(text: &str) -> Result<Usd, MoneyError> {
        let syntax = || MoneyError::Syntax(text.to_owned());
        let (whole, frac) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (text.contains('.') && frac.is_empty()) {
            return Err(syntax());
        }
        if frac.len() > 6 {
            return Err(MoneyError::TooPrecise(text.to_owned()));
        }
        let overflow = || MoneyError::Overflow(text.to_owned());
        let whole: u64 = whole.parse().map_err(|_| overflow())?;
        let mut frac_micros: u64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_micros += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
        }
        whole
            .checked_mul(MICROS_PER_USD)
            .and_then(|m| m.checked_add(frac_micros))
            .map(Usd)
            .ok_or_else(overflow)
    }
}

impl fmt::Display for Usd {
    /// At least two decimals, trailing zeros beyond them trimmed: `1.00`, `1.25`, `0.000123`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICROS_PER_USD;
        let frac = format!("{:06}", self.0 % MICROS_PER_USD);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            &frac[..2]
        } else {
            trimmed
        };
        write!(f, "{whole}.{shown}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: Result<u64, ()>) {
        assert_eq!(
            Usd::parse(text).map(|u| u.0).map_err(|_| ()),
            expect,
            "parse {text:?}"
        );
        if let Ok(m) = expect {
            let shown = Usd(m).to_string();
            assert_eq!(Usd::parse(&shown).map(|u| u.0), Ok(m), "round trip {shown}");
        }
    }

    #[test]
    fn parse_and_display() {
        let cases: &[(&str, Result<u64, ()>)] = &[
            ("1", Ok(1_000_000)),
            ("1.25", Ok(1_250_000)),
            ("0.000001", Ok(1)),
            ("0.1", Ok(100_000)),
            ("100.000000", Ok(100_000_000)),
            ("", Err(())),
            ("-1", Err(())),
            ("1.", Err(())),
            (".5", Err(())),
            ("1.0000001", Err(())),
            ("1e3", Err(())),
            ("18446744073710", Err(())),
        ];
        for (text, expect) in cases {
            check(text, *expect);
        }
        assert_eq!(Usd(1_000_000).to_string(), "1.00");
        assert_eq!(Usd(1_250_000).to_string(), "1.25");
        assert_eq!(Usd(123).to_string(), "0.000123");
        assert_eq!(Usd(0).to_string(), "0.00");
    }
}
