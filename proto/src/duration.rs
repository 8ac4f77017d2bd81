//! Window lengths for budgets and rate limits: `1m 5m 1h 1d 1w 1M 1Q 1Y`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How long a budget or rate-limit window lasts before it resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResetDuration {
    Minute,
    FiveMinutes,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl ResetDuration {
    pub const ALL: [ResetDuration; 8] = [
        ResetDuration::Minute,
        ResetDuration::FiveMinutes,
        ResetDuration::Hour,
        ResetDuration::Day,
        ResetDuration::Week,
        ResetDuration::Month,
        ResetDuration::Quarter,
        ResetDuration::Year,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResetDuration::Minute => "1m",
            ResetDuration::FiveMinutes => "5m",
            ResetDuration::Hour => "1h",
            ResetDuration::Day => "1d",
            ResetDuration::Week => "1w",
            ResetDuration::Month => "1M",
            ResetDuration::Quarter => "1Q",
            ResetDuration::Year => "1Y",
        }
    }

    pub fn parse(text: &str) -> Option<ResetDuration> {
        ResetDuration::ALL.into_iter().find(|d| d.as_str() == text)
    }

    /// The fixed length in milliseconds, or `None` for calendar lengths (month, quarter, year).
    pub fn fixed_ms(self) -> Option<u64> {
        const MINUTE_MS: u64 = 60_000;
        match self {
            ResetDuration::Minute => Some(MINUTE_MS),
            ResetDuration::FiveMinutes => Some(5 * MINUTE_MS),
            ResetDuration::Hour => Some(60 * MINUTE_MS),
            ResetDuration::Day => Some(24 * 60 * MINUTE_MS),
            ResetDuration::Week => Some(7 * 24 * 60 * MINUTE_MS),
            ResetDuration::Month | ResetDuration::Quarter | ResetDuration::Year => None,
        }
    }

    /// The calendar length in months, or `None` for fixed lengths.
    pub fn months(self) -> Option<u32> {
        match self {
            ResetDuration::Month => Some(1),
            ResetDuration::Quarter => Some(3),
            ResetDuration::Year => Some(12),
            _ => None,
        }
    }
}

impl fmt::Display for ResetDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
