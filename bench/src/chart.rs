//! SVG line charts of a run's figures (docs/benchmarks.md shows them). Written here: two
//! plain line charts need axes, ticks, polylines and a legend, not a plotting library's
//! font and raster stack.
use std::fmt::Write as _;

pub struct Series<'a> {
    pub label: &'a str,
    pub color: &'a str,
    /// (x, y), x ascending.
    pub points: &'a [(f64, f64)],
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series<'a>],
}

const W: f64 = 720.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 80.0;

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `count` ticks.
fn step(max: f64, count: f64) -> f64 {
    let raw = (max / count).max(f64::MIN_POSITIVE);
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * pow)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn label(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

impl Chart<'_> {
    pub fn svg(&self) -> String {
        let all = || self.series.iter().flat_map(|s| s.points.iter());
        let x_max = all().map(|p| p.0).fold(0.0, f64::max);
        let y_max = all().map(|p| p.1).fold(0.0, f64::max);
        let (xs, ys) = (step(x_max, 8.0), step(y_max, 6.0));
        let (x_top, y_top) = (
            (x_max / xs).ceil().max(1.0) * xs,
            (y_max / ys).ceil().max(1.0) * ys,
        );
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let px = |x: f64| LEFT + x / x_top * pw;
        let py = |y: f64| TOP + ph - y / y_top * ph;
        let mut o = String::new();
        let _ = writeln!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            o,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
            W / 2.0,
            esc(self.title)
        );
        let mut t = 0.0;
        while t <= x_top + xs / 2.0 {
            let x = px(t);
            let _ = writeln!(
                o,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                label(t)
            );
            t += xs;
        }
        let mut t = 0.0;
        while t <= y_top + ys / 2.0 {
            let y = py(t);
            let _ = writeln!(
                o,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                label(t)
            );
            t += ys;
        }
        let _ = writeln!(
            o,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            TOP + ph + 36.0,
            esc(self.x_label)
        );
        let _ = writeln!(
            o,
            r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            esc(self.y_label)
        );
        for (i, s) in self.series.iter().enumerate() {
            let pts: Vec<String> = s
                .points
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            let _ = writeln!(
                o,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                s.color,
                pts.join(" ")
            );
            let lx = LEFT + i as f64 * 330.0;
            let ly = H - 18.0;
            let _ = writeln!(
                o,
                r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                lx + 24.0,
                s.color,
                lx + 30.0,
                ly + 4.0,
                esc(s.label)
            );
        }
        o.push_str("</svg>\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_data() {
        assert_eq!(step(95.0, 8.0), 20.0);
        assert_eq!(step(2000.0, 6.0), 500.0);
        assert_eq!(step(0.7, 6.0), 0.2);
    }

    #[test]
    fn a_chart_is_one_svg_with_a_polyline_per_series() {
        let a = [(0.0, 0.0), (10.0, 500.0), (20.0, 1000.0)];
        let b = [(0.0, 0.0), (8.0, 1000.0)];
        let svg = Chart {
            title: "Ready <over> time",
            x_label: "s",
            y_label: "Ready",
            series: &[
                Series {
                    label: "orgops",
                    color: "#1f77b4",
                    points: &a,
                },
                Series {
                    label: "bound",
                    color: "#ff7f0e",
                    points: &b,
                },
            ],
        }
        .svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("Ready &lt;over&gt; time"));
    }
}
