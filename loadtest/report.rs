//! What a run says at a glance: the summary table printed after the live progress lines,
//! and the `--report-html` page (the same table plus SVG plots of the viewers over time,
//! delivery, time to first frame and latency), self-contained, no scripts.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::Value;

/// What the plots are drawn from, besides the JSON report.
pub struct Plots<'a> {
    /// Per second since the start: (seconds, viewers connected, received Mbit/s).
    pub timeline: &'a [(f64, f64, f64)],
    /// Per viewer: bytes received per second over the stream's rate.
    pub delivery: &'a [f64],
    /// Per viewer: play to first audio/video message, ms.
    pub first_media_ms: &'a [f64],
    /// Publisher send to viewer receipt, µs.
    pub latency: &'a Histogram<u64>,
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.0} ms"))
}

/// (what, value) rows of the summary.
fn rows(r: &Value) -> Vec<(&'static str, String)> {
    let n = |path: &[&str]| num(r, path).map_or("-".into(), |x| format!("{x:.0}"));
    let pct = |path: &[&str]| num(r, path).map_or("-".into(), |x| format!("{:.1} %", x * 100.0));
    vec![
        (
            "viewers connected",
            format!(
                "{} of {}",
                n(&["viewers", "connected"]),
                n(&["viewers", "requested"])
            ),
        ),
        (
            "failed / closed by server",
            format!(
                "{} / {}",
                n(&["viewers", "failed"]),
                n(&["viewers", "closed_by_server"])
            ),
        ),
        (
            "below 95 % of the stream's rate",
            n(&["viewers", "below_95pct_expected"]),
        ),
        ("stalls (gaps over 1 s)", n(&["viewers", "stalls"])),
        (
            "delivery p50 / worst",
            format!("{} / {}", pct(&["delivery_ratio", "p50"]), {
                // The worst viewer: the lowest ratio (summary keeps p50, p99 and max only).
                r.get("delivery_min")
                    .and_then(Value::as_f64)
                    .map_or("-".into(), |x| format!("{:.1} %", x * 100.0))
            }),
        ),
        (
            "first frame p50 / p99",
            format!(
                "{} / {}",
                ms(num(r, &["time_to_first_media_ms", "p50"])),
                ms(num(r, &["time_to_first_media_ms", "p99"]))
            ),
        ),
        (
            "latency p50 / p99 / max",
            format!(
                "{} / {} / {}",
                ms(num(r, &["latency", "p50_ms"])),
                ms(num(r, &["latency", "p99_ms"])),
                ms(num(r, &["latency", "max_ms"]))
            ),
        ),
        ("stream rate", format!("{} kbit/s", n(&["expected_kbps"]))),
        (
            "load generator",
            format!("{:.2} cores", num(r, &["loadgen", "cores"]).unwrap_or(0.0)),
        ),
    ]
}

/// The table printed when the run ends.
pub fn summary_table(r: &Value) -> String {
    let rows = rows(r);
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let v = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let line = format!("+-{}-+-{}-+\n", "-".repeat(w), "-".repeat(v));
    let mut out = line.clone();
    for (k, val) in &rows {
        let _ = writeln!(out, "| {k:<w$} | {val:>v$} |");
    }
    out.push_str(&line);
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The HTML report.
pub fn html(r: &Value, p: &Plots) -> String {
    let mut out = String::from(
        "<!doctype html><meta charset=utf-8><title>rtmp-load report</title>\
         <style>body{font:14px sans-serif;margin:2em;max-width:1400px}\
         table{border-collapse:collapse}td{border:1px solid #ccc;padding:3px 8px}\
         td:last-child{text-align:right}svg{margin:1em 1em 0 0;border:1px solid #eee}</style>",
    );
    let _ = write!(
        out,
        "<h1>rtmp-load</h1><p>{}</p><table>",
        escape(r["url"].as_str().unwrap_or(""))
    );
    for (k, v) in rows(r) {
        let _ = write!(out, "<tr><td>{}<td>{}", escape(k), escape(&v));
    }
    out.push_str("</table><div>");
    let viewers: Vec<(f64, f64)> = p.timeline.iter().map(|t| (t.0, t.1)).collect();
    let rx: Vec<(f64, f64)> = p.timeline.iter().map(|t| (t.0, t.2)).collect();
    out.push_str(&chart(
        "Viewers connected",
        "seconds",
        "viewers",
        &viewers,
        false,
        false,
    ));
    out.push_str(&chart("Received", "seconds", "Mbit/s", &rx, false, false));
    out.push_str(&chart(
        "Delivery per viewer (CDF)",
        "received / stream rate",
        "share of viewers",
        &cdf(p.delivery),
        false,
        false,
    ));
    out.push_str(&chart(
        "Time to first frame (CDF)",
        "ms",
        "share of viewers",
        &cdf(p.first_media_ms),
        false,
        false,
    ));
    let mut lat = Vec::new();
    if !p.latency.is_empty() {
        for v in p.latency.iter_log(100, 1.25) {
            let n = v.count_since_last_iteration();
            if n > 0 {
                lat.push((v.value_iterated_to() as f64 / 1000.0, n as f64));
            }
        }
    }
    out.push_str(&chart(
        "Latency histogram",
        "ms (log)",
        "messages",
        &lat,
        true,
        true,
    ));
    out.push_str("</div>");
    out
}

/// (value, share of values at or below it), sorted.
fn cdf(values: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(i, x)| (*x, (i + 1) as f64 / n))
        .collect()
}

/// One SVG plot: a line through `points`, or a bar at each point; x on a log scale if asked.
fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
    bars: bool,
    log_x: bool,
) -> String {
    const W: f64 = 420.0;
    const H: f64 = 240.0;
    const L: f64 = 56.0;
    const B: f64 = 40.0;
    let mut s =
        format!("<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' font-size='11'>");
    let _ = write!(
        s,
        "<text x='{}' y='16' text-anchor='middle' font-weight='bold'>{}</text>",
        W / 2.0,
        escape(title)
    );
    if points.is_empty() {
        let _ = write!(
            s,
            "<text x='{}' y='{}' text-anchor='middle'>no data</text></svg>",
            W / 2.0,
            H / 2.0
        );
        return s;
    }
    let fx = |x: f64| if log_x { x.max(1e-3).log10() } else { x };
    let (mut x0, mut x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(fx(p.0)), b.max(fx(p.0)))
    });
    if x1 - x0 < 1e-9 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    let y1 = points.iter().fold(0.0f64, |m, p| m.max(p.1)).max(1e-9) * 1.05;
    let px = |x: f64| L + (fx(x) - x0) / (x1 - x0) * (W - L - 12.0);
    let py = |y: f64| H - B - y / y1 * (H - B - 26.0);
    let _ = write!(
        s,
        "<line x1='{L}' y1='{}' x2='{}' y2='{}' stroke='#444'/>",
        H - B,
        W - 12.0,
        H - B
    );
    let _ = write!(
        s,
        "<line x1='{L}' y1='26' x2='{L}' y2='{}' stroke='#444'/>",
        H - B
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let xv = x0 + f * (x1 - x0);
        let xv = if log_x { 10f64.powf(xv) } else { xv };
        let (tx, ty) = (L + f * (W - L - 12.0), py(f * y1));
        let _ = write!(
            s,
            "<text x='{tx}' y='{}' text-anchor='middle'>{}</text>",
            H - B + 14.0,
            tick(xv, if log_x { xv } else { x1 - x0 })
        );
        let _ = write!(
            s,
            "<text x='{}' y='{}' text-anchor='end'>{}</text>",
            L - 4.0,
            ty + 4.0,
            tick(f * y1, y1)
        );
    }
    let _ = write!(
        s,
        "<text x='{}' y='{}' text-anchor='middle'>{}</text>",
        (W + L) / 2.0,
        H - 6.0,
        escape(x_label)
    );
    let _ = write!(
        s,
        "<text x='12' y='{}' transform='rotate(-90 12 {})' text-anchor='middle'>{}</text>",
        (H - B) / 2.0 + 13.0,
        (H - B) / 2.0 + 13.0,
        escape(y_label)
    );
    if bars {
        for p in points {
            let (x, y) = (px(p.0), py(p.1));
            let _ = write!(s, "<line x1='{x:.1}' y1='{}' x2='{x:.1}' y2='{y:.1}' stroke='#3a7' stroke-width='3'/>", H - B);
        }
    } else {
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill='none' stroke='#37a' stroke-width='1.5' points='{}'/>",
            path.join(" ")
        );
    }
    s.push_str("</svg>");
    s
}

/// A tick label with as many decimals as the axis' span needs to tell ticks apart.
fn tick(v: f64, span: f64) -> String {
    let decimals = (-(span / 4.0).abs().max(1e-6).log10())
        .ceil()
        .clamp(0.0, 4.0) as usize;
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_page_show_the_figures() {
        let r = serde_json::json!({
            "url": "rtmp://h/live/<x>",
            "viewers": {"requested": 10, "connected": 9, "failed": 1, "closed_by_server": 0,
                        "below_95pct_expected": 2, "stalls": 0},
            "delivery_ratio": {"p50": 0.99}, "delivery_min": 0.5,
            "time_to_first_media_ms": {"p50": 120.0, "p99": 340.0},
            "latency": {"p50_ms": 5.0, "p99_ms": 40.0, "max_ms": 90.0},
            "expected_kbps": 1000.0, "loadgen": {"cores": 0.25},
        });
        let t = summary_table(&r);
        assert!(t.contains("| viewers connected "), "{t}");
        assert!(
            t.contains("9 of 10") && t.contains("99.0 % / 50.0 %") && t.contains("120 ms / 340 ms"),
            "{t}"
        );
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in [1_000, 2_000, 2_000, 50_000] {
            h.record(v).unwrap();
        }
        let page = html(
            &r,
            &Plots {
                timeline: &[(1.0, 5.0, 4.0), (2.0, 9.0, 8.5)],
                delivery: &[0.5, 0.99, 1.0],
                first_media_ms: &[100.0, 340.0],
                latency: &h,
            },
        );
        assert_eq!(page.matches("<svg").count(), 5);
        assert!(page.contains("rtmp://h/live/&lt;x&gt;"));
        assert!(page.contains("<polyline") && page.contains("stroke-width='3'"));
        assert!(!page.contains("no data"));
    }
}
