//! A trace as a waterfall: spans nested under their parents, each a bar placed to scale on
//! the trace's time line. Both the store (a rollout's spans) and the AgentOps endpoint (a
//! trace's spans) draw theirs with it; each service only maps its spans to [`WfSpan`].
//!
//! Rows come in depth-first order (children by start time), each with its depth, so a
//! child row follows its parent. A span whose parent is not among the spans is a root:
//! partial traces are common (a parent still running, or recorded by another process).
//! Clicking a row (the script) loads the page at its `detail` URL into `#span-detail`
//! ([`detail_panel`]).

use std::collections::HashMap;

use maud::{Markup, html};

use super::format;

/// One span, as the waterfall needs it.
#[derive(Debug, Clone, Default)]
pub struct WfSpan {
    pub span_id: String,
    pub parent_id: Option<String>,
    pub name: String,
    pub start: Option<f64>,
    pub end: Option<f64>,
    /// An extra class for the row and its bar (`llm`, `reward`, `error`).
    pub kind: Option<&'static str>,
    /// A short note after the name (a reward's value, a call's token count).
    pub note: Option<String>,
    /// Where the span's details are (an HTML fragment).
    pub detail: String,
}

/// The spans in tree order with their depths (indexes into `spans`).
pub fn tree_order(spans: &[WfSpan]) -> Vec<(usize, usize)> {
    let by_id: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_id.as_deref().and_then(|p| by_id.get(p)) {
            Some(&p) if p != i => children[p].push(i),
            _ => roots.push(i),
        }
    }
    let start = |i: &usize| spans[*i].start.unwrap_or(f64::INFINITY);
    roots.sort_by(|a, b| start(a).total_cmp(&start(b)));
    for c in &mut children {
        c.sort_by(|a, b| start(a).total_cmp(&start(b)));
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&r| (r, 0)).collect();
    loop {
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            out.push((i, depth));
            stack.extend(children[i].iter().rev().map(|&c| (c, depth + 1)));
        }
        // Spans only reachable through a cycle of parents: shown as roots, never lost.
        match seen.iter().position(|s| !s) {
            Some(i) => stack.push((i, 0)),
            None => break,
        }
    }
    out
}

/// The panel the script fills with a clicked span's details; place it beside the waterfall
/// (outside any live region, so a refresh keeps what the reader opened).
pub fn detail_panel() -> Markup {
    html! {
        aside #span-detail .span-detail {
            p.muted { "Click a span to see its attributes." }
        }
    }
}

/// `#waterfall`: the rows of `spans` in tree order, bars to scale.
pub fn waterfall(spans: &[WfSpan]) -> Markup {
    let starts = spans.iter().filter_map(|s| s.start);
    let t0 = starts.clone().fold(f64::INFINITY, f64::min);
    let t1 = spans
        .iter()
        .filter_map(|s| s.end.or(s.start))
        .fold(f64::NEG_INFINITY, f64::max);
    let total = if t1 > t0 { t1 - t0 } else { 0.0 };
    let pct = |t: f64| {
        if total > 0.0 {
            ((t - t0) / total * 100.0).clamp(0.0, 100.0)
        } else {
            0.0
        }
    };
    let order = tree_order(spans);
    html! {
            div #waterfall .waterfall data-count=(spans.len()) {
                div.wf-axis {
                    div.wf-label { "span" }
                    div.wf-track {
                        @for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
                            span.wf-tick style={ "left:" (q * 100.0) "%" } {
                                "+" (format::duration(total * q))
                            }
                        }
                    }
                    div.wf-dur { "duration" }
                }
                @if spans.is_empty() {
                    p.muted { "No spans recorded." }
                }
                @for (i, depth) in order {
                    @let s = &spans[i];
                    @let left = s.start.map_or(0.0, pct);
                    @let right = s.end.or(s.start).map_or(left, pct);
                    @let dur = match (s.start, s.end) {
                        (Some(a), Some(b)) => format::duration(b - a),
                        (Some(_), None) => "running".to_owned(),
                        _ => "—".to_owned(),
                    };
                    div class={ "wf-row" @if let Some(k) = s.kind { " " (k) } }
                        tabindex="0" role="button"
                        data-span-id=(s.span_id)
                        data-parent-id=(s.parent_id.as_deref().unwrap_or(""))
                        data-depth=(depth)
                        data-detail=(s.detail) {
                        div.wf-label style={ "padding-left:" (depth.min(40) * 14 + 4) "px" } {
                            span.wf-name { (s.name) }
                            @if let Some(note) = &s.note { span.wf-note { (note) } }
                        }
                        div.wf-track {
                            div.wf-bar
                                style={ "left:" (format!("{left:.3}")) "%;width:" (format!("{:.3}", (right - left).max(0.15))) "%" }
                                title={ (s.name) " · " (dur) } {}
                        }
                        div.wf-dur { (dur) }
                    }
                }
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, start: f64) -> WfSpan {
        WfSpan {
            span_id: id.into(),
            parent_id: parent.map(Into::into),
            name: id.into(),
            start: Some(start),
            end: Some(start + 1.0),
            ..WfSpan::default()
        }
    }

    #[test]
    fn children_follow_their_parent_in_start_order() {
        let spans = [
            span("b2", Some("b"), 5.0),
            span("root", None, 0.0),
            span("b", Some("root"), 2.0),
            span("a", Some("root"), 1.0),
            span("b1", Some("b"), 3.0),
            span("orphan", Some("gone"), 0.5),
        ];
        let names: Vec<(&str, usize)> = tree_order(&spans)
            .into_iter()
            .map(|(i, d)| (spans[i].name.as_str(), d))
            .collect();
        assert_eq!(
            names,
            [
                ("root", 0),
                ("a", 1),
                ("b", 1),
                ("b1", 2),
                ("b2", 2),
                ("orphan", 0)
            ]
        );
    }

    #[test]
    fn a_cycle_of_parents_loses_no_span() {
        let spans = [span("x", Some("y"), 0.0), span("y", Some("x"), 1.0)];
        let order = tree_order(&spans);
        assert_eq!(order.len(), 2);
        let markup = waterfall(&spans).into_string();
        assert_eq!(markup.matches("class=\"wf-row\"").count(), 2);
    }

    #[test]
    fn names_are_escaped() {
        let mut s = span("<script>", None, 0.0);
        s.name = "<script>alert(1)</script>".into();
        let markup = waterfall(&[s]).into_string();
        assert!(!markup.contains("<script>alert"));
        assert!(markup.contains("&lt;script&gt;"));
    }
}
