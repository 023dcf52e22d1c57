//! Text output: at most [`WIDTH`] columns. Identifiers and table cells are shortened with
//! `…` when they must be; reason messages and notes are wrapped, never cut.

use std::fmt::Write as _;

use unicode_width::UnicodeWidthStr;

use crate::view::{CustomerView, Diagnosis, SecretHealth, Summary};

pub const WIDTH: usize = 100;

/// ANSI colour, on only for a terminal without NO_COLOR.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn detect() -> Style {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn red(&self, t: &str) -> String {
        self.paint("1;31", t)
    }
    fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
}

/// `text` shortened to `max` columns with a trailing `…`.
pub fn ellipsize(text: &str, max: usize) -> String {
    if text.width() <= max {
        return text.to_string();
    }
    let mut out = String::new();
    for c in text.chars() {
        if out.width() + unicode_width::UnicodeWidthChar::width(c).unwrap_or(0) + 1 > max {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

fn pad(text: &str, width: usize) -> String {
    let w = text.width();
    if w >= width {
        text.to_string()
    } else {
        format!("{text}{}", " ".repeat(width - w))
    }
}

/// `text` wrapped to [`WIDTH`], every line starting with `indent` spaces; words longer than
/// a line are broken, nothing is dropped.
fn wrap(out: &mut String, indent: usize, text: &str) {
    let prefix = " ".repeat(indent);
    let opts = textwrap::Options::new(WIDTH)
        .initial_indent(&prefix)
        .subsequent_indent(&prefix)
        .break_words(true);
    for line in textwrap::wrap(text, opts) {
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// A label column of `LABEL` width followed by a value that is shortened to fit.
const LABEL: usize = 11;

fn field(out: &mut String, s: &Style, label: &str, value: &str) {
    let _ = writeln!(
        out,
        "{}{}",
        s.bold(&pad(label, LABEL)),
        ellipsize(value, WIDTH - LABEL)
    );
}

/// Age of an RFC 3339 time, like kubectl: 45s, 12m, 3h, 5d.
pub fn age(time: Option<&str>) -> String {
    let Some(t) = time.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "-".into();
    };
    let secs = jiff::Timestamp::now().as_second() - t.as_second();
    match secs {
        s if s < 0 => "0s".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn why(out: &mut String, s: &Style, d: &Diagnosis) {
    let cause = format!("{} (from {})", d.cause, d.source);
    let _ = writeln!(out, "{}{}", s.bold(&pad("WHY", LABEL)), s.yellow(&cause));
    wrap(out, LABEL, &d.message);
    let mut extra = Vec::new();
    if let Some(rid) = &d.request_id {
        extra.push(format!("request id {rid}"));
    }
    if let Some(at) = &d.retry_at {
        extra.push(format!("next attempt at {at}"));
    }
    if !extra.is_empty() {
        wrap(out, LABEL, &extra.join("; "));
    }
    let next = format!("{}{}", pad("NEXT", LABEL), d.next_step);
    let opts = textwrap::Options::new(WIDTH)
        .subsequent_indent("           ")
        .break_words(true);
    for (i, line) in textwrap::wrap(&next, opts).iter().enumerate() {
        if i == 0 && line.len() >= LABEL {
            let (label, rest) = line.split_at(LABEL);
            let _ = writeln!(out, "{}{}", s.bold(label), rest.trim_end());
        } else {
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

fn health_text(h: &SecretHealth) -> String {
    if !h.present {
        return match h.detail.as_deref() {
            Some("not created yet") => "not created yet".into(),
            _ => "MISSING".into(),
        };
    }
    let mut parts = vec!["present".to_string()];
    parts.push(if h.owned { "owned" } else { "NOT OWNED" }.into());
    if h.id_matches == Some(false) {
        parts.push("id differs from status".into());
    }
    match h.authenticating {
        Some(true) => parts.push("authenticating".into()),
        Some(false) => parts.push("NOT AUTHENTICATING".into()),
        None => {}
    }
    let mut text = parts.join(", ");
    if let Some(d) = &h.detail
        && h.owned
        && h.id_matches != Some(false)
    {
        text.push_str(&format!(" ({d})"));
    }
    text
}

fn healthy(h: &SecretHealth) -> bool {
    if !h.present {
        return h.detail.as_deref() == Some("not created yet");
    }
    h.owned && h.id_matches != Some(false) && h.authenticating != Some(false)
}

/// The full view of one CustomerOrg.
pub fn customer(v: &CustomerView, s: &Style) -> String {
    let mut out = String::new();
    let verdict = if v.ready {
        s.green("Ready")
    } else {
        s.red("NOT READY")
    };
    let title = ellipsize(
        &format!("CustomerOrg {}/{}", v.namespace, v.name),
        WIDTH - 12,
    );
    let _ = writeln!(out, "{}  {verdict}", s.bold(&title));
    why(&mut out, s, &v.diagnosis);
    out.push('\n');

    let mut state = format!(
        "desired {}, observed {}",
        v.desired_state,
        v.observed_state.as_deref().unwrap_or("-")
    );
    let _ = write!(
        state,
        "; generation {}, observed {}",
        v.generation.map_or("-".into(), |g| g.to_string()),
        v.observed_generation.map_or("-".into(), |g| g.to_string())
    );
    if v.paused {
        state.push_str("; PAUSED");
    }
    if v.deleting {
        state.push_str("; DELETING");
    }
    field(&mut out, s, "STATE", &state);
    field(
        &mut out,
        s,
        "ORG",
        v.org_id.as_deref().unwrap_or("- (none yet)"),
    );
    let p = &v.provider;
    let provider = if !p.found {
        format!("{}: does not exist", p.name)
    } else {
        let ready = match p.ready {
            Some(true) => "Ready".to_string(),
            Some(false) => format!("NOT Ready ({})", p.reason.as_deref().unwrap_or("-")),
            None => "not checked yet".to_string(),
        };
        let mut text = format!("{}: {ready}", p.name);
        if let Some(t) = &p.rate_limit_tier {
            let _ = write!(text, ", tier {t}");
        }
        if let Some(o) = &p.organization_id {
            let _ = write!(text, ", parent {o}");
        }
        text
    };
    field(&mut out, s, "PROVIDER", &provider);
    if let Some(v) = &p.verified {
        wrap(&mut out, LABEL, &format!("verify: {v}"));
    }

    let c = &v.credits;
    let spec = match &c.spec {
        Some(sp) => {
            let mut t = format!("spec allocated {}", sp.allocated);
            match sp.monthly_cap {
                Some(cap) => {
                    let _ = write!(t, ", monthly cap {cap}");
                }
                None => t.push_str(", no cap"),
            }
            if let (Some(th), Some(am)) = (sp.refill_threshold, sp.refill_amount) {
                let _ = write!(t, ", refill {am} below {th}");
            }
            t
        }
        None => "spec: none".into(),
    };
    field(&mut out, s, "CREDITS", &spec);
    if let Some(st) = &c.status {
        field(
            &mut out,
            s,
            "",
            &format!(
                "status allocated {}, balance {}, available {}",
                st.allocated, st.balance, st.available
            ),
        );
    }
    if let Some(live) = &v.live {
        live_credits(&mut out, s, v, live);
    }

    out.push('\n');
    let _ = writeln!(out, "{}", s.bold("API KEYS"));
    if v.api_keys.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for k in &v.api_keys {
        let head = format!(
            "  {}  {}  prefix {}",
            pad(&ellipsize(&k.name, 24), 24),
            pad(
                &ellipsize(k.id.as_deref().unwrap_or("- (not minted)"), 40),
                40
            ),
            k.prefix.as_deref().unwrap_or("-")
        );
        let _ = writeln!(out, "{}", ellipsize(&head, WIDTH));
        secret_line(&mut out, s, &k.secret_name, &k.secret);
    }
    let _ = writeln!(out, "{}", s.bold("WEBHOOKS"));
    if v.webhooks.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for w in &v.webhooks {
        let head = format!(
            "  {}  {}  {}",
            pad(&ellipsize(&w.name, 24), 24),
            pad(
                &ellipsize(w.id.as_deref().unwrap_or("- (not created)"), 40),
                40
            ),
            w.url
        );
        let _ = writeln!(out, "{}", ellipsize(&head, WIDTH));
        secret_line(&mut out, s, &w.secret_name, &w.secret);
    }

    out.push('\n');
    let _ = writeln!(out, "{}", s.bold("CONDITIONS"));
    for c in &v.conditions {
        let status = match (c.type_.as_str(), c.status.as_str()) {
            ("Ready", "True") | ("Stalled", "False") => s.green(&pad(&c.status, 6)),
            ("Ready", _) | ("Stalled", _) => s.red(&pad(&c.status, 6)),
            _ => pad(&c.status, 6),
        };
        let head = format!(
            "  {} {status} {} {}",
            pad(&c.type_, 12),
            pad(&ellipsize(&c.reason, 28), 28),
            age(Some(&c.last_transition_time)),
        );
        let _ = writeln!(out, "{head}");
        wrap(&mut out, 4, &c.message);
    }
    if v.conditions.is_empty() {
        let _ = writeln!(out, "  none yet");
    }

    let _ = writeln!(
        out,
        "{}",
        s.bold(&format!("EVENTS (last {})", v.events.len()))
    );
    if v.events.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for e in &v.events {
        let kind = if e.type_ == "Warning" {
            s.yellow(&pad(&e.type_, 8))
        } else {
            pad(&e.type_, 8)
        };
        let count = if e.count > 1 {
            format!(" (x{})", e.count)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {} {kind} {}{count}",
            pad(&age(e.time.as_deref()), 5),
            ellipsize(&e.reason, 60)
        );
        wrap(&mut out, 4, &e.note);
    }
    out
}

fn secret_line(out: &mut String, s: &Style, name: &str, h: &SecretHealth) {
    let text = format!("Secret {name}: {}", health_text(h));
    let mut lines = String::new();
    wrap(&mut lines, 6, &text);
    if healthy(h) {
        out.push_str(&lines);
    } else {
        for line in lines.lines() {
            let _ = writeln!(out, "{}", s.yellow(line));
        }
    }
}

fn live_credits(out: &mut String, s: &Style, v: &CustomerView, live: &crate::view::LiveView) {
    let mut t = format!(
        "live balance {}, available {}",
        live.balance.map_or("-".into(), |b| b.to_string()),
        live.available.map_or("-".into(), |b| b.to_string())
    );
    match live.monthly_cap {
        Some(cap) => {
            let _ = write!(t, ", monthly cap {cap}");
        }
        None => t.push_str(", no cap"),
    }
    if let (Some(th), Some(am)) = (live.refill_threshold, live.refill_amount) {
        let _ = write!(t, ", refill {am} below {th}");
    }
    field(out, s, "", &t);
    if let Some(err) = &live.error {
        let mut lines = String::new();
        wrap(&mut lines, LABEL, &format!("live read failed: {err}"));
        out.push_str(&s.yellow(&lines));
        return;
    }
    if live.no_ledger {
        field(
            out,
            s,
            "",
            "ledger: this provider keeps no allocation ledger",
        );
        return;
    }
    let spec = v.credits.spec.as_ref().map_or(0, |c| c.allocated);
    field(
        out,
        s,
        "",
        &format!(
            "ledger: marked allocations sum {} (spec {spec}), {} allocation events",
            live.marked_sum,
            live.ledger.len()
        ),
    );
    if !live.ledger.is_empty() {
        let head = format!(
            "  {:>9}  {}  EVENT (* = moved by orgops)",
            "CREDITS",
            pad("TRANSFER", 40)
        );
        let _ = writeln!(out, "{}", s.bold(&head));
    }
    for r in &live.ledger {
        let line = format!(
            "  {:>9}  {}  {} {}",
            format!("+{}", r.credits),
            pad(&ellipsize(r.transfer_id.as_deref().unwrap_or("-"), 40), 40),
            ellipsize(&r.event_id, 40),
            if r.marked { "*" } else { "" }
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// The table of CustomerOrgs.
pub fn table(items: &[Summary], s: &Style, wide: bool) -> String {
    let mut out = String::new();
    if items.is_empty() {
        let _ = writeln!(out, "No CustomerOrgs found.");
        return out;
    }
    let ready_cell = |r: &Summary| if r.ready { "True" } else { "False" };
    let org = |r: &Summary| {
        let id = r.org_id.as_deref().unwrap_or("-");
        if wide {
            id.to_string()
        } else {
            ellipsize(id, 13)
        }
    };
    let cols: Vec<[String; 7]> = items
        .iter()
        .map(|r| {
            [
                ellipsize(&r.namespace, 16),
                ellipsize(&r.name, 24),
                org(r),
                r.desired_state.clone(),
                r.observed_state.clone().unwrap_or_else(|| "-".into()),
                ready_cell(r).to_string(),
                r.balance.map_or("-".into(), |b| b.to_string()),
            ]
        })
        .collect();
    let heads = [
        "NAMESPACE",
        "NAME",
        "ORG",
        "DESIRED",
        "STATE",
        "READY",
        "BALANCE",
    ];
    let mut widths: Vec<usize> = heads.iter().map(|h| h.width()).collect();
    for row in &cols {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.width());
        }
    }
    let used: usize = widths.iter().map(|w| w + 2).sum();
    let reason_width = WIDTH.saturating_sub(used).max(12);
    let mut header = String::new();
    for (h, w) in heads.iter().zip(&widths) {
        header.push_str(&pad(h, w + 2));
    }
    header.push_str("REASON");
    let _ = writeln!(out, "{}", s.bold(&header));
    for (r, row) in items.iter().zip(&cols) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            let padded = pad(cell, w + 2);
            line.push_str(&match i {
                5 if r.ready => s.green(&padded),
                5 => s.red(&padded),
                _ => padded,
            });
        }
        let reason = if r.ready {
            String::new()
        } else {
            s.yellow(&ellipsize(&r.diagnosis.cause, reason_width))
        };
        let _ = writeln!(out, "{}", format!("{line}{reason}").trim_end());
        if wide && !r.ready {
            let d = &r.diagnosis;
            wrap(&mut out, 4, &format!("{}: {}", d.source, d.message));
        }
    }
    out
}
