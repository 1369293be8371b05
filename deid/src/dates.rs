//! Dates moved back by a patient's shift (Retain Longitudinal Temporal Information with Modified
//! Dates, PS3.15 §E.3.6): DA values and the date part of DT values move by whole days, so
//! intervals between a patient's dates and every time of day stay true; TM values are kept. A
//! value that is not a whole date (a year, a month, or unreadable) cannot be shifted exactly and
//! becomes empty.

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn is_valid(year: i64, month: i64, day: i64) -> bool {
    (1..=12).contains(&month) && day >= 1 && civil_from_days(days_from_civil(year, month, day)) == (year, month, day)
}

/// `YYYYMMDD` moved back by `days`; `None` when it is not a whole valid date.
pub fn shift_date(date: &str, days: i64) -> Option<String> {
    let date = date.trim();
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, month, day) = (date[..4].parse().ok()?, date[4..6].parse().ok()?, date[6..].parse().ok()?);
    if !is_valid(year, month, day) {
        return None;
    }
    let (y, m, d) = civil_from_days(days_from_civil(year, month, day) - days);
    (y >= 1).then(|| format!("{y:04}{m:02}{d:02}"))
}

/// A DA value (one date, or a range `A-B` as in query keys) moved back; `None` when a part
/// cannot be shifted.
pub fn shift_da(value: &str, days: i64) -> Option<String> {
    match value.split_once('-') {
        Some((from, to)) => {
            let from = if from.trim().is_empty() { String::new() } else { shift_date(from, days)? };
            let to = if to.trim().is_empty() { String::new() } else { shift_date(to, days)? };
            Some(format!("{from}-{to}"))
        }
        None => shift_date(value, days),
    }
}

/// A DT value `YYYYMMDD[HH[MM[SS[.F]]]][&ZZXX]` with its date moved back; `None` when it has
/// no whole date.
pub fn shift_dt(value: &str, days: i64) -> Option<String> {
    let value = value.trim();
    if value.len() < 8 {
        return None;
    }
    let (date, rest) = value.split_at(8);
    Some(format!("{}{rest}", shift_date(date, days)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_dates_move_back_by_whole_days() {
        assert_eq!(shift_date("20240301", 1).as_deref(), Some("20240229"));
        assert_eq!(shift_date("20230101", 365).as_deref(), Some("20220101"));
        assert_eq!(shift_date("20000229", 3652).as_deref(), Some("19900301"));
        assert_eq!(shift_da("20200110-20200120", 10).as_deref(), Some("20191231-20200110"));
        assert_eq!(shift_da("-20200120", 10).as_deref(), Some("-20200110"));
        assert_eq!(shift_dt("20200101120000.5+0100", 1).as_deref(), Some("20191231120000.5+0100"));
    }

    #[test]
    fn what_is_not_a_whole_date_is_not_shifted() {
        for value in ["2020", "202001", "20201340", "20210229", "abcdefgh", ""] {
            assert_eq!(shift_date(value, 3), None, "{value}");
        }
        assert_eq!(shift_dt("2020", 3), None);
    }
}
