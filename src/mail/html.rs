//! HTML from inbound mail, made fit for an agent's screen: [`sanitize`] keeps the layout
//! (tables, images, links, a short list of harmless inline styles) and drops everything that
//! runs or submits (scripts, event handlers, `javascript:` URLs, forms, style sheets), and
//! [`text_from_html`] gives the readable text of a mail that has only HTML, for the text
//! column, snippets and search.
//!
//! Sanitising is done by `ammonia` (an html5ever parser with an allow-list), not by pattern
//! matching: mail HTML is hostile input and only a real parser sees it the way a browser does.

use std::collections::HashSet;

/// Inline style properties kept on any element: enough for colours, fonts, alignment and
/// box sizes. Nothing that takes a URL (`background`, `background-image`, `list-style`,
/// `border-image`) and nothing that positions or hides content (`position`, `display`).
const STYLE_PROPERTIES: &[&str] = &[
    "color",
    "background-color",
    "font-family",
    "font-size",
    "font-style",
    "font-weight",
    "text-align",
    "text-decoration",
    "text-indent",
    "line-height",
    "vertical-align",
    "white-space",
    "width",
    "height",
    "max-width",
    "margin",
    "margin-top",
    "margin-right",
    "margin-bottom",
    "margin-left",
    "padding",
    "padding-top",
    "padding-right",
    "padding-bottom",
    "padding-left",
    "border",
    "border-top",
    "border-right",
    "border-bottom",
    "border-left",
    "border-color",
    "border-style",
    "border-width",
    "border-collapse",
    "border-spacing",
];

/// Attributes mail layouts rely on beyond ammonia's defaults (which already keep `src`,
/// `href`, `alt`, table geometry, `lang`, `title`).
const EXTRA_GENERIC_ATTRIBUTES: &[&str] = &["style", "align", "valign", "bgcolor", "dir"];

/// Past these an HTML body is not sanitised (see [`sanitize_bounded`]). html5ever's tree
/// builder is about quadratic in nesting depth (5,000 nested list items: 0.44 s; 100,000
/// nested `<div>`: 25 s) and linear but not cheap in size and elements (1 MiB: ~0.13 s), so
/// a crafted mail could hold a worker for minutes. Within these limits the worst generated
/// mail costs well under a second (see `gochat bench hostile`).
pub const MAX_HTML_BYTES: usize = 1 << 20;
/// See [`MAX_HTML_BYTES`].
pub const MAX_HTML_ELEMENTS: usize = 50_000;
/// See [`MAX_HTML_BYTES`].
pub const MAX_HTML_DEPTH: usize = 500;

/// Elements that never hold content, so never nest.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// [`sanitize`] when `html` is within the limits above; otherwise why not (the caller keeps
/// the text and stores the HTML as an attachment: the mail is never failed for its HTML).
pub fn sanitize_bounded(html: &str) -> Result<String, String> {
    if html.len() > MAX_HTML_BYTES {
        return Err(format!(
            "{} bytes of HTML, over {MAX_HTML_BYTES}",
            html.len()
        ));
    }
    let (elements, depth) = shape(html);
    if elements > MAX_HTML_ELEMENTS {
        return Err(format!(
            "{elements} HTML elements, over {MAX_HTML_ELEMENTS}"
        ));
    }
    if depth > MAX_HTML_DEPTH {
        return Err(format!("HTML nested {depth} deep, over {MAX_HTML_DEPTH}"));
    }
    Ok(sanitize(html))
}

/// How many start tags `html` has and how deep they nest, read in one pass the way a browser
/// roughly would: void elements do not nest, an end tag closes up to the nearest open
/// element of its name among the last few (further back, or unknown, it is ignored, as
/// html5ever ignores a stray end tag). Errs on the deep side (`<p><p>` counts 2), which
/// only sends an odd mail's HTML to an attachment sooner.
fn shape(html: &str) -> (usize, usize) {
    /// How far back an end tag looks for its start tag.
    const LOOK_BACK: usize = 16;
    let bytes = html.as_bytes();
    let mut open: Vec<&[u8]> = Vec::new();
    let (mut elements, mut depth) = (0, 0);
    let mut at = 0;
    while let Some(lt) = memchr(b'<', &bytes[at..]) {
        let start = at + lt + 1;
        let closing = bytes.get(start) == Some(&b'/');
        let name_at = start + usize::from(closing);
        let name_len = bytes[name_at..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        at = name_at + name_len;
        if name_len == 0 || !bytes[name_at].is_ascii_alphabetic() {
            continue;
        }
        let name = &bytes[name_at..name_at + name_len];
        if closing {
            let from = open.len().saturating_sub(LOOK_BACK);
            if let Some(i) = open[from..]
                .iter()
                .rposition(|o| o.eq_ignore_ascii_case(name))
            {
                open.truncate(from + i);
            }
        } else {
            elements += 1;
            if !VOID.iter().any(|v| v.as_bytes().eq_ignore_ascii_case(name)) {
                open.push(name);
                depth = depth.max(open.len());
            }
        }
    }
    (elements, depth)
}

/// The position of the first `needle` in `haystack`.
fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// Sanitised HTML, safe to show in the inbox: scripts, `<style>` sheets, event handlers,
/// `javascript:`/`data:` URLs, forms and frames removed; links get
/// `rel="noopener noreferrer"`; `cid:` image references are kept so inline parts still show.
///
/// Remote images are blocked: an `<img>` whose `src` is an `http(s)` URL keeps it as
/// `data-remote-src` (a link the agent may choose to load), so a tracking pixel does not
/// tell the sender each time the mail is viewed. Inline styles lose the declarations that
/// overlay or hide content (negative margins, zero sizes) or run code (`expression(`).
pub fn sanitize(html: &str) -> String {
    let html = html.replace('\0', "");
    let mut builder = ammonia::Builder::default();
    builder
        .add_generic_attributes(EXTRA_GENERIC_ATTRIBUTES.iter().copied())
        .add_tag_attributes("img", ["data-remote-src"])
        .filter_style_properties(STYLE_PROPERTIES.iter().copied().collect::<HashSet<_>>())
        .attribute_filter(|_element, attribute, value| match attribute {
            "style" => Some(safe_style(value).into()),
            _ => Some(value.into()),
        })
        .add_url_schemes(["cid"])
        .strip_comments(true);
    block_remote_images(&builder.clean(&html).to_string())
}

/// `style` without the declarations that could overlay other content, hide it, or run code.
fn safe_style(style: &str) -> String {
    style
        .split(';')
        .filter(|declaration| {
            let Some((name, value)) = declaration.split_once(':') else {
                return false;
            };
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_ascii_lowercase();
            let zero = value
                .trim_end_matches(|c: char| c.is_ascii_alphabetic() || c == '%')
                .parse::<f64>()
                .is_ok_and(|v| v <= 0.0);
            !(value.contains("expression(")
                || value.contains("url(")
                || (name.starts_with("margin")
                    && value.split_whitespace().any(|v| v.starts_with('-')))
                || (matches!(
                    name.as_str(),
                    "width" | "height" | "max-width" | "font-size" | "line-height"
                ) && zero))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Sanitised HTML with each remote `<img src>` renamed `data-remote-src`. Reads ammonia's
/// output, whose serializer writes every attribute as `name="value"` with `"` escaped, so
/// a tag's end and its attributes are found exactly.
fn block_remote_images(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find("<img ") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        let mut end = tag.len();
        let mut quoted = false;
        for (i, c) in tag.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '>' if !quoted => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        out.push_str(&rename_remote_src(&tag[..end]));
        rest = &tag[end..];
    }
    out.push_str(rest);
    out
}

/// One `<img ...>` tag with a remote ` src="http..."` renamed.
fn rename_remote_src(tag: &str) -> String {
    let mut out = String::with_capacity(tag.len() + 12);
    let mut quoted = false;
    let mut i = 0;
    while i < tag.len() {
        let rest = &tag[i..];
        if !quoted && rest.starts_with(" src=\"") {
            let value = rest[6..].to_ascii_lowercase();
            if value.starts_with("http://")
                || value.starts_with("https://")
                || value.starts_with("//")
            {
                out.push_str(" data-remote-src=\"");
                i += 6;
                quoted = true;
                continue;
            }
        }
        let Some(c) = rest.chars().next() else { break };
        if c == '"' {
            quoted = !quoted;
        }
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Elements whose content is never text a reader sees.
const INVISIBLE: &[&str] = &[
    "script", "style", "head", "title", "template", "noscript", "object", "svg",
];

/// Elements that start and end a line.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "pre",
    "hr",
    "address",
    "section",
    "article",
    "header",
    "footer",
    "dl",
    "dt",
    "dd",
    "center",
    "body",
    "html",
];

/// A plain-text version of an HTML body, for mail that has only HTML: tags dropped,
/// invisible content (`<script>`, `<style>`, `<head>`) skipped, whitespace collapsed as a
/// browser would, block ends and `<br>` as line breaks, character references decoded.
/// At most one blank line in a row.
pub fn text_from_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    // The invisible element we are inside of, if any, and its nesting depth.
    let mut skipping: Option<(String, usize)> = None;
    while !rest.is_empty() {
        let Some(start) = rest.find('<') else {
            if skipping.is_none() {
                push_text(&mut out, rest);
            }
            break;
        };
        if skipping.is_none() {
            push_text(&mut out, &rest[..start]);
        }
        rest = &rest[start..];
        // `<` not followed by a tag name is text ("a < b"), as a browser reads it.
        if !rest[1..].starts_with(|c: char| c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?'))
        {
            if skipping.is_none() {
                push_text(&mut out, "<");
            }
            rest = &rest[1..];
            continue;
        }
        if rest.starts_with("<!--") {
            rest = rest.find("-->").map_or("", |end| &rest[end + 3..]);
            continue;
        }
        let Some(end) = rest.find('>') else {
            break;
        };
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        let closing = tag.starts_with('/');
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if let Some((skip_name, depth)) = &mut skipping {
            if *skip_name == name {
                if closing {
                    *depth -= 1;
                    if *depth == 0 {
                        skipping = None;
                    }
                } else if !tag.ends_with('/') {
                    *depth += 1;
                }
            }
            continue;
        }
        if !closing && !tag.ends_with('/') && INVISIBLE.contains(&name.as_str()) {
            skipping = Some((name, 1));
            continue;
        }
        if name == "br" {
            out.push('\n');
        } else if BLOCKS.contains(&name.as_str()) {
            // One break between blocks, however deeply they nest (`</p><p>`, `</td></tr>`).
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
        } else if matches!(name.as_str(), "td" | "th") && closing {
            out.push(' ');
        }
    }
    let mut text = String::with_capacity(out.len());
    let mut blank_run = 0;
    for line in out.lines().map(str::trim) {
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        text.push_str(line);
        text.push('\n');
    }
    text.trim().to_owned()
}

/// Appends a run of character data: whitespace collapsed to single spaces, references
/// decoded.
fn push_text(out: &mut String, raw: &str) {
    let decoded = decode_entities(raw);
    for c in decoded.chars() {
        if c.is_whitespace() && c != '\u{a0}' {
            if !out.ends_with([' ', '\n']) && !out.is_empty() {
                out.push(' ');
            }
        } else if c == '\u{a0}' {
            out.push(' ');
        } else if c != '\0' {
            out.push(c);
        }
    }
}

/// Decodes numeric character references and the named ones mail actually uses; an unknown
/// or malformed reference is left as written.
pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest
            .char_indices()
            .take(12)
            .find(|&(_, c)| c == ';')
            .map(|(i, _)| i);
        let decoded = end.and_then(|end| decode_entity(&rest[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = if let Some(hex) = num.strip_prefix(['x', 'X']) {
            u32::from_str_radix(hex, 16).ok()?
        } else {
            num.parse::<u32>().ok()?
        };
        return match char::from_u32(code) {
            Some('\0') | None => Some('\u{fffd}'),
            Some(c) => Some(c),
        };
    }
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "deg" => '°',
        "times" => '×',
        "divide" => '÷',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "szlig" => 'ß',
        "eacute" => 'é',
        "egrave" => 'è',
        "ecirc" => 'ê',
        "agrave" => 'à',
        "aacute" => 'á',
        "acirc" => 'â',
        "ccedil" => 'ç',
        "iacute" => 'í',
        "oacute" => 'ó',
        "uacute" => 'ú',
        "ntilde" => 'ñ',
        "Eacute" => 'É',
        "zwnj" => '\u{200c}',
        "zwj" => '\u{200d}',
        "shy" => '\u{ad}',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_counts_elements_and_nesting_as_a_browser_would() {
        assert_eq!(shape("<p>a<br>b</p><div><img src=x><b>c</b></div>"), (5, 2));
        assert_eq!(shape("<div>".repeat(700).as_str()), (700, 700));
        // Stray end tags close nothing; end tags close what they name.
        assert_eq!(shape(&"<div></span>".repeat(600)), (600, 600));
        assert_eq!(shape(&"<DIV><b>x</B></div>".repeat(600)), (1200, 2));
        assert_eq!(shape("<!-- <div> --><!DOCTYPE html>< p>1 < 2"), (1, 1));
    }

    #[test]
    fn html_past_the_limits_is_not_sanitised() {
        assert!(sanitize_bounded("<p>fine</p>").is_ok());
        let deep = "<div>".repeat(MAX_HTML_DEPTH + 1);
        assert!(
            sanitize_bounded(&deep)
                .unwrap_err()
                .contains("nested 501 deep")
        );
        let many = "<br>".repeat(MAX_HTML_ELEMENTS + 1);
        assert!(sanitize_bounded(&many).unwrap_err().contains("elements"));
        let big = "a".repeat(MAX_HTML_BYTES + 1);
        assert!(
            sanitize_bounded(&big)
                .unwrap_err()
                .contains("bytes of HTML")
        );
    }

    #[test]
    fn html_becomes_readable_text() {
        assert_eq!(
            text_from_html("<p>Hello <b>Ada</b>,</p><p>5 &lt; 6 &amp; done<br>bye</p>"),
            "Hello Ada,\n5 < 6 & done\nbye"
        );
    }

    #[test]
    fn invisible_content_and_comments_are_skipped() {
        let html = "<html><head><title>T</title><style>p{color:red}</style></head>\
                    <body><!-- hidden --><script>alert(1)</script><div>Visible&nbsp;text\n   \
                    wrapped</div><table><tr><td>a</td><td>b</td></tr></table></body></html>";
        assert_eq!(text_from_html(html), "Visible text wrapped\na b");
    }

    #[test]
    fn numeric_references_and_unknown_ones() {
        assert_eq!(
            text_from_html("caf&#233; &#x263A; &bogus; a & b"),
            "café ☺ &bogus; a & b"
        );
        assert_eq!(decode_entities("&#0;x&#99999999;"), "\u{fffd}x\u{fffd}");
    }

    #[test]
    fn blank_lines_are_collapsed_and_broken_markup_survives() {
        assert_eq!(
            text_from_html("<p>a</p>\n\n<p></p><p></p><br><br><br><p>b</p><p>c <unclosed"),
            "a\n\nb\nc"
        );
        assert_eq!(text_from_html(""), "");
        assert_eq!(text_from_html("<script>never closed"), "");
    }

    #[test]
    fn remote_images_are_blocked_and_kept_as_links() {
        let clean = sanitize(
            r#"<p><img alt="a>b" src="https://t.example/pixel.gif?u=1&amp;v=2" width="1"><img src="cid:logo@x"><img src="HTTP://x.example/a.png"> src="https://text.example"</p>"#,
        );
        assert!(!clean.contains(" src=\"https://t.example"), "{clean}");
        assert!(!clean.contains(" src=\"HTTP"), "{clean}");
        assert!(
            clean.contains(r#"data-remote-src="https://t.example/pixel.gif?u=1&amp;v=2""#),
            "{clean}"
        );
        assert!(clean.contains(r#"src="cid:logo@x""#), "{clean}");
        assert!(
            clean.contains("src=\"https://text.example\""),
            "text is untouched: {clean}"
        );
        // A crafted `data-remote-src` stays data: it never loads either.
        assert!(!sanitize(r#"<img data-remote-src="x" src="//t.example/p">"#).contains(" src="));
    }

    #[test]
    fn styles_that_overlay_hide_or_run_are_dropped() {
        let clean = sanitize(
            r#"<div style="margin-top: -500px; color: red; width: 0; height:0px; font-size: 0; width: expression(alert(1)); margin: 0 -20px">x</div><p style="margin: 4px; width: 50%">y</p>"#,
        );
        for banned in [
            "-500px",
            "expression",
            "-20px",
            "width:0",
            "height:0",
            "font-size:0",
        ] {
            assert!(
                !clean.replace(' ', "").contains(banned),
                "{banned} in {clean}"
            );
        }
        assert!(clean.contains("color:red"), "{clean}");
        assert!(clean.replace(' ', "").contains("margin:4px"), "{clean}");
        assert!(clean.replace(' ', "").contains("width:50%"), "{clean}");
    }

    #[test]
    fn sanitize_removes_what_runs() {
        let dirty = r#"<p onclick="steal()">Hi <a href="javascript:alert(1)">x</a>
            <a href="https://example.org/">ok</a><img src="cid:logo@x" onerror="boom()">
            <form action="https://evil.example/"><input name="pw"></form>
            <script>alert(1)</script><iframe src="https://evil.example/"></iframe>
            <span style="color: red; background-image: url(https://t.example/p.gif)">red</span></p>"#;
        let clean = sanitize(dirty);
        for banned in [
            "onclick",
            "javascript:",
            "onerror",
            "<form",
            "<input",
            "<script",
            "alert(1)",
            "<iframe",
            "url(",
        ] {
            assert!(!clean.contains(banned), "{banned} survived in {clean}");
        }
        assert!(clean.contains(r#"href="https://example.org/""#), "{clean}");
        assert!(clean.contains(r#"src="cid:logo@x""#), "{clean}");
        assert!(clean.contains("color:red"), "{clean}");
        assert!(clean.contains("noopener"), "{clean}");
    }

    #[test]
    fn sanitize_drops_style_sheets_and_data_urls() {
        let clean = sanitize(
            "<style>body{display:none}</style><img src=\"data:text/html;base64,PHNjcmlwdD4=\">ok",
        );
        assert!(!clean.contains("display"), "{clean}");
        assert!(!clean.contains("data:"), "{clean}");
        assert!(clean.contains("ok"));
    }
}
