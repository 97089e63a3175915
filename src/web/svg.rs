//! Charts drawn on the server as inline SVG: no script, no CDN, cheap on a
//! Pi. Colours come from presentation attributes and classes (the page's
//! Content-Security-Policy allows no inline style).

use super::html::esc;
use std::fmt::Write as _;

/// A horizontal bar: `used` of `total`, red from 90 %.
pub fn usage_bar(used: u64, total: u64) -> String {
    let frac = if total == 0 {
        0.0
    } else {
        (used as f64 / total as f64).clamp(0.0, 1.0)
    };
    let class = if frac >= 0.9 { "bar-full" } else { "bar-used" };
    format!(
        r#"<svg class="bar" viewBox="0 0 200 14" width="200" height="14" role="img" aria-label="{pct:.0}% used"><rect class="bar-bg" x="0" y="0" width="200" height="14" rx="3"/><rect class="{class}" x="0" y="0" width="{w:.1}" height="14" rx="3"/></svg>"#,
        pct = frac * 100.0,
        w = frac * 200.0
    )
}

/// A line chart of `(unix time, value)` points, with the value axis
/// labelled by `label`.
pub fn line_chart(title: &str, points: &[(i64, f64)], label: &dyn Fn(f64) -> String) -> String {
    const W: f64 = 560.0;
    const H: f64 = 160.0;
    const LEFT: f64 = 70.0;
    const BOTTOM: f64 = 22.0;
    const TOP: f64 = 18.0;
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><text class="chart-title" x="{LEFT}" y="12">{t}</text>"#,
        t = esc(title)
    );
    if points.len() < 2 {
        let _ = write!(
            svg,
            r#"<text class="chart-empty" x="{LEFT}" y="{}">not enough samples yet (one every 10 minutes)</text></svg>"#,
            H / 2.0
        );
        return svg;
    }
    let (t0, t1) = (points[0].0 as f64, points[points.len() - 1].0 as f64);
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi - lo < 1.0 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    };
    let x = |t: f64| LEFT + (t - t0) / (t1 - t0).max(1.0) * (W - LEFT - 10.0);
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}"/><line class="axis" x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/>"#,
        b = H - BOTTOM,
        r = W - 10.0
    );
    for v in [lo, hi] {
        let _ = write!(
            svg,
            r#"<text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 4.0,
            y(v) + 4.0,
            esc(&label(v))
        );
    }
    let date = |t: f64| {
        chrono::DateTime::from_timestamp(t as i64, 0)
            .map(|d| {
                d.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M")
                    .to_string()
            })
            .unwrap_or_default()
    };
    let _ = write!(
        svg,
        r#"<text class="tick" x="{LEFT}" y="{h}">{a}</text><text class="tick" x="{r}" y="{h}" text-anchor="end">{b}</text>"#,
        h = H - 6.0,
        r = W - 10.0,
        a = date(t0),
        b = date(t1)
    );
    let path: Vec<String> = points
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t as f64), y(*v)))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline class="line" fill="none" points="{}"/></svg>"#,
        path.join(" ")
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_escape_their_title_and_scale_into_the_box() {
        let pts = [(0, 10.0), (3600, 20.0), (7200, 15.0)];
        let s = line_chart("<growth>", &pts, &|v| format!("{v:.0}"));
        assert!(s.contains("&lt;growth&gt;") && !s.contains("<growth>"));
        let poly = s
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        for p in poly.split(' ') {
            let (x, y) = p.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(
                (70.0..=550.0).contains(&x) && (18.0..=138.0).contains(&y),
                "{p}"
            );
        }
        assert!(line_chart("t", &pts[..1], &|v| v.to_string()).contains("not enough samples"));
        assert!(usage_bar(95, 100).contains("bar-full"));
        assert!(usage_bar(5, 100).contains("bar-used"));
        assert!(usage_bar(5, 0).contains("width=\"0.0\""));
    }
}
