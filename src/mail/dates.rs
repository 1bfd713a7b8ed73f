//! The `date` template helper: `{{date quote.at}}` writes an RFC 3339 time as the recipient
//! reads dates, in their time zone (`contact.time_zone`, UTC when unknown) and in the
//! language of the template variant being rendered (`template.language`): a mail in German
//! says "Montag, 23. November 2026, 11:00 CET", not "2026-11-23T10:00:00Z".
//!
//! Month and day names are kept here for the languages templates ship in (English, German);
//! other languages get the English form until their names are added.

use chrono::{DateTime, Datelike, Timelike, Weekday};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderErrorReason,
};
use serde_json::Value;

/// The helper, registered under `date` for subjects, text and HTML.
pub struct DateHelper;

impl HelperDef for DateHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let value = h
            .param(0)
            .and_then(|p| p.value().as_str())
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("date", 0))?;
        let root = ctx.data();
        let tz = root.pointer("/contact/time_zone").and_then(Value::as_str);
        let lang = root
            .pointer("/template/language")
            .and_then(Value::as_str)
            .unwrap_or("en");
        let text = format_date(value, tz, lang).map_err(RenderErrorReason::Other)?;
        out.write(&text)?;
        Ok(())
    }
}

/// `rfc3339` in `tz` (an IANA name; UTC when `None` or unknown) and language `lang`.
pub fn format_date(rfc3339: &str, tz: Option<&str>, lang: &str) -> Result<String, String> {
    let at = DateTime::parse_from_rfc3339(rfc3339)
        .map_err(|e| format!("date: {rfc3339:?} is not an RFC 3339 time ({e})"))?;
    let zone: chrono_tz::Tz = tz.and_then(|t| t.parse().ok()).unwrap_or(chrono_tz::UTC);
    let local = at.with_timezone(&zone);
    let (hh, mm, abbr) = (local.hour(), local.minute(), local.format("%Z"));
    let (day, year) = (local.day(), local.year());
    let month = local.month0() as usize;
    Ok(match lang.split(['-', '_']).next().unwrap_or("en") {
        "de" => format!(
            "{}, {day}. {} {year}, {hh:02}:{mm:02} {abbr}",
            weekday_de(local.weekday()),
            MONTHS_DE[month]
        ),
        _ => format!(
            "{}, {day} {} {year}, {hh:02}:{mm:02} {abbr}",
            local.weekday_name_en(),
            MONTHS_EN[month]
        ),
    })
}

const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTHS_DE: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];

fn weekday_de(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "Montag",
        Weekday::Tue => "Dienstag",
        Weekday::Wed => "Mittwoch",
        Weekday::Thu => "Donnerstag",
        Weekday::Fri => "Freitag",
        Weekday::Sat => "Samstag",
        Weekday::Sun => "Sonntag",
    }
}

trait EnglishWeekday {
    fn weekday_name_en(&self) -> &'static str;
}

impl<T: Datelike> EnglishWeekday for T {
    fn weekday_name_en(&self) -> &'static str {
        match self.weekday() {
            Weekday::Mon => "Monday",
            Weekday::Tue => "Tuesday",
            Weekday::Wed => "Wednesday",
            Weekday::Thu => "Thursday",
            Weekday::Fri => "Friday",
            Weekday::Sat => "Saturday",
            Weekday::Sun => "Sunday",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::format_date;

    #[test]
    fn dates_are_in_the_contacts_zone_and_the_templates_language() {
        let at = "2026-11-23T10:00:00Z";
        assert_eq!(
            format_date(at, Some("Europe/Berlin"), "de").as_deref(),
            Ok("Montag, 23. November 2026, 11:00 CET")
        );
        assert_eq!(
            format_date(at, Some("America/New_York"), "en").as_deref(),
            Ok("Monday, 23 November 2026, 05:00 EST")
        );
        // Summer time, a regional tag, and no zone at all.
        assert_eq!(
            format_date("2026-07-01T10:00:00+00:00", Some("Europe/Berlin"), "de-AT").as_deref(),
            Ok("Mittwoch, 1. Juli 2026, 12:00 CEST")
        );
        assert_eq!(
            format_date(at, None, "fr").as_deref(),
            Ok("Monday, 23 November 2026, 10:00 UTC")
        );
        assert!(format_date("yesterday", None, "en").is_err());
    }
}
