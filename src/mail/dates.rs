//! The `date` template helper: `{{date quote.at}}` writes an RFC 3339 time as the recipient
//! reads dates, in their time zone (`contact.time_zone`, UTC when unknown) and in the
//! language of the template variant being rendered (`template.language`): a mail in German
//! says "Montag, 23. November 2026, 11:00 CET", not "2026-11-23T10:00:00Z".
//!
//! Day and month names come from chrono's locales; each language a template may be
//! written in also needs its own way of putting a date together (`LANGUAGES`). Other
//! languages get the English form until their pattern is added.

use chrono::{DateTime, Locale};
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
    let language = lang.split(['-', '_']).next().unwrap_or("en");
    let (_, locale, pattern) = LANGUAGES
        .iter()
        .find(|(l, _, _)| *l == language)
        .unwrap_or(&LANGUAGES[0]);
    Ok(at
        .with_timezone(&zone)
        .format_localized(pattern, *locale)
        .to_string())
}

/// The languages dates are written in: the first part of the language tag, the locale
/// whose day and month names are used, and the pattern. The first is the fallback.
const LANGUAGES: &[(&str, Locale, &str)] = &[
    ("en", Locale::en_US, "%A, %-d %B %Y, %H:%M %Z"),
    ("de", Locale::de_DE, "%A, %-d. %B %Y, %H:%M %Z"),
];

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
