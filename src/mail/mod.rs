//! Mail: message templates now; MIME building, SMTP delivery and parsing as the outbound and
//! inbound jobs land.

pub mod mime;
pub mod smtp;
pub mod templates;

pub use templates::{RenderError, Rendered, Templates};

/// A plain-text version of an HTML body, for mail that has only HTML: tags dropped, block
/// ends and `<br>` as line breaks, the common entities decoded.
pub fn text_from_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            rest = "";
            break;
        };
        let tag = rest[start + 1..start + end].trim().to_ascii_lowercase();
        let name = tag
            .trim_start_matches('/')
            .split_whitespace()
            .next()
            .unwrap_or("");
        if matches!(
            name,
            "br" | "br/" | "p" | "div" | "li" | "tr" | "h1" | "h2" | "h3"
        ) && (tag.starts_with('/') || name.starts_with("br"))
        {
            out.push('\n');
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn html_becomes_readable_text() {
        assert_eq!(
            super::text_from_html("<p>Hello <b>Ada</b>,</p><p>5 &lt; 6 &amp; done<br>bye</p>"),
            "Hello Ada,\n5 < 6 & done\nbye"
        );
    }
}
