//! Window arithmetic for budgets and rate limits: where the window holding an instant
//! starts and ends, either anchored at the owner's creation time or snapped to UTC
//! calendar boundaries (midnight, Monday, 1st of month, quarter, 1 January).
//!
//! Pure integer arithmetic on Unix milliseconds; no clock, no time-zone database.

use tollgate_proto::{ResetDuration, UnixMs};

const DAY_MS: i64 = 86_400_000;

/// A half-open interval `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: UnixMs,
    pub end_ms: UnixMs,
}

/// The window of length `reset` that contains `at_ms`.
///
/// Anchored windows start at `anchor_ms` (the creation time) and repeat; an instant before
/// the anchor belongs to the first window. Calendar months keep the anchor's day of month,
/// clamped to the month's length (an anchor on 31 January gives 28/29 February, then
/// 31 March).
pub fn window_at(
    reset: ResetDuration,
    calendar_aligned: bool,
    anchor_ms: UnixMs,
    at_ms: UnixMs,
) -> Window {
    let at = to_i64(at_ms);
    let anchor = to_i64(anchor_ms);
    let (start, end) = match (calendar_aligned, reset.fixed_ms(), reset.months()) {
        (true, _, _) if reset == ResetDuration::Week => {
            let day = at.div_euclid(DAY_MS);
            // 1970-01-01 was a Thursday, three days after a Monday.
            let monday = day - (day + 3).rem_euclid(7);
            (monday * DAY_MS, (monday + 7) * DAY_MS)
        }
        (true, Some(len), _) => {
            let len = to_i64(len);
            let start = at - at.rem_euclid(len);
            (start, start + len)
        }
        (true, None, Some(n)) => {
            let (year, month, _) = civil_from_days(at.div_euclid(DAY_MS));
            let index = year * 12 + (month - 1);
            let first = index - index.rem_euclid(i64::from(n));
            (month_start_ms(first), month_start_ms(first + i64::from(n)))
        }
        (false, Some(len), _) => {
            let len = to_i64(len);
            let k = if at < anchor { 0 } else { (at - anchor) / len };
            (anchor + k * len, anchor + (k + 1) * len)
        }
        (false, None, Some(n)) => {
            let n = i64::from(n);
            let (ay, am, _) = civil_from_days(anchor.div_euclid(DAY_MS));
            let (ty, tm, _) = civil_from_days(at.div_euclid(DAY_MS));
            let months = ((ty * 12 + tm) - (ay * 12 + am)).max(0);
            let mut k = months - months.rem_euclid(n);
            if k > 0 && add_months(anchor, k) > at {
                k -= n;
            }
            (add_months(anchor, k), add_months(anchor, k + n))
        }
        // Every duration is either fixed or calendar; the enum guarantees one of them.
        (_, None, None) => (at, at),
    };
    Window {
        start_ms: to_u64(start),
        end_ms: to_u64(end),
    }
}

fn to_i64(ms: UnixMs) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX / 2)
}

fn to_u64(ms: i64) -> UnixMs {
    u64::try_from(ms).unwrap_or(0)
}

/// Unix ms of 00:00 UTC on the 1st of the month with absolute index `year * 12 + month0`.
fn month_start_ms(index: i64) -> i64 {
    days_from_civil(index.div_euclid(12), index.rem_euclid(12) + 1, 1) * DAY_MS
}

/// `anchor_ms` moved `k` calendar months later, its day clamped to the target month.
fn add_months(anchor_ms: i64, k: i64) -> i64 {
    let day = anchor_ms.div_euclid(DAY_MS);
    let time_of_day = anchor_ms.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(day);
    let index = y * 12 + (m - 1) + k;
    let (ty, tm) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    let td = d.min(days_in_month(ty, tm));
    days_from_civil(ty, tm, td) * DAY_MS + time_of_day
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Formats Unix ms as RFC 3339 UTC (`2026-03-01T00:00:00Z`), for messages and the API.
pub fn rfc3339(ms: UnixMs) -> String {
    let ms = to_i64(ms);
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    let secs = ms.rem_euclid(DAY_MS) / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResetDuration::*;

    /// Parses `YYYY-MM-DDTHH:MM:SSZ` for readable test tables.
    fn t(s: &str) -> UnixMs {
        let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().expect("digits");
        let days = days_from_civil(n(0..4), n(5..7), n(8..10));
        to_u64(days * DAY_MS + (n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) * 1000)
    }

    fn check(reset: ResetDuration, aligned: bool, anchor: &str, at: &str, start: &str, end: &str) {
        let w = window_at(reset, aligned, t(anchor), t(at));
        assert_eq!(
            (rfc3339(w.start_ms), rfc3339(w.end_ms)),
            (start.to_owned(), end.to_owned()),
            "{reset} aligned={aligned} anchor={anchor} at={at}"
        );
        assert!(w.start_ms <= t(at).max(w.start_ms) && w.start_ms < w.end_ms);
    }

    #[test]
    fn calendar_aligned_windows() {
        let a = "2020-01-01T00:00:00Z";
        let cases = [
            (
                Minute,
                "2026-11-23T12:34:56Z",
                "2026-11-23T12:34:00Z",
                "2026-11-23T12:35:00Z",
            ),
            (
                FiveMinutes,
                "2026-11-23T12:34:56Z",
                "2026-11-23T12:30:00Z",
                "2026-11-23T12:35:00Z",
            ),
            (
                Hour,
                "2026-11-23T23:59:59Z",
                "2026-11-23T23:00:00Z",
                "2026-11-24T00:00:00Z",
            ),
            (
                Day,
                "2026-11-23T00:00:00Z",
                "2026-11-23T00:00:00Z",
                "2026-11-24T00:00:00Z",
            ),
            (
                Day,
                "2026-12-31T23:59:59Z",
                "2026-12-31T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            // 2026-11-23 is a Monday; the Sunday before belongs to the previous week.
            (
                Week,
                "2026-11-23T00:00:00Z",
                "2026-11-23T00:00:00Z",
                "2026-11-30T00:00:00Z",
            ),
            (
                Week,
                "2026-11-22T23:59:59Z",
                "2026-11-16T00:00:00Z",
                "2026-11-23T00:00:00Z",
            ),
            (
                Week,
                "1970-01-05T00:00:00Z",
                "1970-01-05T00:00:00Z",
                "1970-01-12T00:00:00Z",
            ),
            (
                Month,
                "2024-02-29T12:00:00Z",
                "2024-02-01T00:00:00Z",
                "2024-03-01T00:00:00Z",
            ),
            (
                Month,
                "2026-12-31T23:59:59Z",
                "2026-12-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            (
                Quarter,
                "2026-11-23T00:00:00Z",
                "2026-10-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            (
                Quarter,
                "2026-03-31T23:59:59Z",
                "2026-01-01T00:00:00Z",
                "2026-04-01T00:00:00Z",
            ),
            (
                Quarter,
                "2026-04-01T00:00:00Z",
                "2026-04-01T00:00:00Z",
                "2026-07-01T00:00:00Z",
            ),
            (
                Year,
                "2028-02-29T00:00:00Z",
                "2028-01-01T00:00:00Z",
                "2029-01-01T00:00:00Z",
            ),
        ];
        for (reset, at, start, end) in cases {
            check(reset, true, a, at, start, end);
        }
    }

    #[test]
    fn anchored_windows() {
        let cases = [
            (
                Minute,
                "2026-11-23T12:00:30Z",
                "2026-11-23T12:05:45Z",
                "2026-11-23T12:05:30Z",
                "2026-11-23T12:06:30Z",
            ),
            (
                Day,
                "2026-11-23T15:00:00Z",
                "2026-11-25T14:59:59Z",
                "2026-11-24T15:00:00Z",
                "2026-11-25T15:00:00Z",
            ),
            (
                Day,
                "2026-11-23T15:00:00Z",
                "2026-11-01T00:00:00Z",
                "2026-11-23T15:00:00Z",
                "2026-11-24T15:00:00Z",
            ),
            (
                Week,
                "2026-11-25T00:00:00Z",
                "2026-12-02T00:00:00Z",
                "2026-12-02T00:00:00Z",
                "2026-12-09T00:00:00Z",
            ),
            // Month ends: the anchor day is clamped to shorter months, then restored.
            (
                Month,
                "2024-01-31T10:00:00Z",
                "2024-02-29T10:00:00Z",
                "2024-02-29T10:00:00Z",
                "2024-03-31T10:00:00Z",
            ),
            (
                Month,
                "2024-01-31T10:00:00Z",
                "2024-02-29T09:59:59Z",
                "2024-01-31T10:00:00Z",
                "2024-02-29T10:00:00Z",
            ),
            (
                Month,
                "2023-01-31T10:00:00Z",
                "2023-03-15T00:00:00Z",
                "2023-02-28T10:00:00Z",
                "2023-03-31T10:00:00Z",
            ),
            (
                Month,
                "2026-11-15T00:00:00Z",
                "2027-01-14T23:59:59Z",
                "2026-12-15T00:00:00Z",
                "2027-01-15T00:00:00Z",
            ),
            (
                Quarter,
                "2026-11-30T00:00:00Z",
                "2027-02-27T12:00:00Z",
                "2026-11-30T00:00:00Z",
                "2027-02-28T00:00:00Z",
            ),
            (
                Quarter,
                "2026-11-30T00:00:00Z",
                "2027-03-01T00:00:00Z",
                "2027-02-28T00:00:00Z",
                "2027-05-30T00:00:00Z",
            ),
            (
                Year,
                "2024-02-29T00:00:00Z",
                "2025-03-01T00:00:00Z",
                "2025-02-28T00:00:00Z",
                "2026-02-28T00:00:00Z",
            ),
            (
                Year,
                "2024-02-29T00:00:00Z",
                "2028-02-29T00:00:00Z",
                "2028-02-29T00:00:00Z",
                "2029-02-28T00:00:00Z",
            ),
        ];
        for (reset, anchor, at, start, end) in cases {
            check(reset, false, anchor, at, start, end);
        }
    }

    #[test]
    fn civil_round_trip_and_leap_years() {
        for day in -800_000..800_000 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert!(is_leap(2000) && is_leap(2024) && !is_leap(1900) && !is_leap(2026));
        assert_eq!(rfc3339(t("2000-02-29T23:59:59Z")), "2000-02-29T23:59:59Z");
    }

    #[test]
    fn windows_tile_time_without_gaps() {
        for reset in ResetDuration::ALL {
            for aligned in [false, true] {
                let anchor = t("2024-01-31T10:20:30Z");
                let mut at = anchor;
                for _ in 0..30 {
                    let w = window_at(reset, aligned, anchor, at);
                    assert!(
                        w.start_ms <= at && at < w.end_ms,
                        "{reset} {aligned} {}",
                        rfc3339(at)
                    );
                    let next = window_at(reset, aligned, anchor, w.end_ms);
                    assert_eq!(next.start_ms, w.end_ms, "{reset} {aligned}");
                    at = w.end_ms + 1;
                }
            }
        }
    }
}
