//! HTML building blocks: escaping, the page frame, human-readable sizes
//! and ages. Pages are plain server-rendered HTML; every action is a form,
//! so the page works without JavaScript (which only adds live progress).

use chrono::{DateTime, Local};

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes a path segment for a link.
pub fn url_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// "3 h ago", "2 d ago" for an RFC 3339 time.
pub fn age(t: Option<&str>, now: DateTime<Local>) -> String {
    let Some(t) = t.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return "never".into();
    };
    let s = (now - t.with_timezone(&Local)).num_seconds();
    if s < 0 {
        return "in the future (clock skew?)".into();
    }
    let (v, unit) = match s {
        0..60 => (s, "s"),
        60..3600 => (s / 60, "min"),
        3600..172_800 => (s / 3600, "h"),
        _ => (s / 86400, "d"),
    };
    format!("{v} {unit} ago")
}

pub fn time(t: Option<&str>) -> String {
    t.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Local).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "—".into())
}

pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The frame every page shares. `csrf` goes into the logout form and a
/// meta tag the script reads for its own requests.
pub fn page(title: &str, node: &str, user: Option<(&str, &str)>, body: &str) -> String {
    let nav = match user {
        Some((user, csrf)) => format!(
            r#"<nav><a href="/">Overview</a> <a href="/jobs">Jobs</a> <span class="who">{u}</span> <form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{c}"><button>Log out</button></form></nav>"#,
            u = esc(user),
            c = esc(csrf)
        ),
        None => String::new(),
    };
    let csrf_meta = user
        .map(|(_, c)| format!(r#"<meta name="csrf" content="{}">"#, esc(c)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">{csrf_meta}
<title>{t} · strata · {n}</title><link rel="stylesheet" href="/static/style.css"><script src="/static/app.js" defer></script></head>
<body><header><a class="brand" href="/">strata</a> <span class="node">{n}</span>{nav}</header>
<main>{body}</main></body></html>
"#,
        t = esc(title),
        n = esc(node),
    )
}

/// A POST button (a form with the CSRF token), for actions.
pub fn action(path: &str, label: &str, csrf: &str, extra: &[(&str, &str)], class: &str) -> String {
    let hidden: String = extra
        .iter()
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{}" value="{}">"#,
                esc(k),
                esc(v)
            )
        })
        .collect();
    format!(
        r#"<form method="post" action="{p}" class="inline"><input type="hidden" name="csrf" value="{c}">{hidden}<button class="{cl}">{l}</button></form>"#,
        p = esc(path),
        c = esc(csrf),
        cl = esc(class),
        l = esc(label)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_sizes_read_well() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500_000), "1.50 MB");
        let now = Local::now();
        let t = (now - chrono::TimeDelta::hours(5)).to_rfc3339();
        assert_eq!(age(Some(&t), now), "5 h ago");
        assert_eq!(age(None, now), "never");
        assert_eq!(duration(3725.0), "1:02:05");
        assert_eq!(duration(65.0), "1:05");
    }
}
