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

/// Rows a waterfall shows at once. Past it, a waterfall that can fold ([`waterfall`] with a
/// subtree URL) shows the tree down to the deepest level that fits and folds the rest: a
/// rollout of thousands of spans would otherwise be megabytes of HTML that nobody reads at
/// once. A folded row carries a button that loads its hidden rows ([`subtree`]).
pub const ROWS_SHOWN: usize = 600;

/// Where a time falls on the trace's time line, in percent.
struct Scale {
    t0: f64,
    total: f64,
}

impl Scale {
    fn of(spans: &[WfSpan]) -> Self {
        let t0 = spans
            .iter()
            .filter_map(|s| s.start)
            .fold(f64::INFINITY, f64::min);
        let t1 = spans
            .iter()
            .filter_map(|s| s.end.or(s.start))
            .fold(f64::NEG_INFINITY, f64::max);
        let total = if t1 > t0 { t1 - t0 } else { 0.0 };
        Self { t0, total }
    }

    fn pct(&self, t: f64) -> f64 {
        if self.total > 0.0 {
            ((t - self.t0) / self.total * 100.0).clamp(0.0, 100.0)
        } else {
            0.0
        }
    }
}

/// For each position of a tree order, how many rows its subtree holds below it (they follow
/// it, deeper than it).
fn subtree_sizes(order: &[(usize, usize)]) -> Vec<usize> {
    let mut sizes = vec![0; order.len()];
    let mut open: Vec<usize> = Vec::new();
    for (pos, &(_, depth)) in order.iter().enumerate() {
        while let Some(&top) = open.last() {
            if order[top].1 < depth {
                break;
            }
            sizes[top] = pos - top - 1;
            open.pop();
        }
        open.push(pos);
    }
    for top in open {
        sizes[top] = order.len() - top - 1;
    }
    sizes
}

/// The deepest level (relative to `base`) whose rows, with every shallower one, fit in
/// [`ROWS_SHOWN`]; `None` when even the top level does not.
fn fitting_depth(depths: impl Iterator<Item = usize>, base: usize) -> Option<usize> {
    let mut per_level: Vec<usize> = Vec::new();
    for d in depths {
        let level = d - base;
        if per_level.len() <= level {
            per_level.resize(level + 1, 0);
        }
        per_level[level] += 1;
    }
    let mut rows = 0;
    let mut fits = None;
    for (level, n) in per_level.iter().enumerate() {
        rows += n;
        if rows > ROWS_SHOWN {
            break;
        }
        fits = Some(level);
    }
    fits
}

/// How `rows` rows at `depths` are shown: all of them within [`ROWS_SHOWN`]; past it the
/// levels that fit (the deepest level shown, no row limit), and if not even the first level
/// fits, its first [`ROWS_SHOWN`] rows.
fn folding(
    depths: impl Iterator<Item = usize>,
    base: usize,
    rows: usize,
) -> (Option<usize>, usize) {
    if rows <= ROWS_SHOWN {
        return (None, usize::MAX);
    }
    match fitting_depth(depths, base) {
        Some(d) => (Some(d), usize::MAX),
        None => (Some(0), ROWS_SHOWN),
    }
}

/// The rows at the positions `range` of `order`, those deeper than `base + max_depth`
/// folded into their ancestor at that level, at most `limit` of them.
struct Rows<'a> {
    spans: &'a [WfSpan],
    order: &'a [(usize, usize)],
    sizes: &'a [usize],
    scale: Scale,
    subtree: Option<&'a dyn Fn(&WfSpan) -> String>,
}

impl Rows<'_> {
    fn render(
        &self,
        range: std::ops::Range<usize>,
        base: usize,
        max_depth: Option<usize>,
        limit: usize,
    ) -> Markup {
        let shown = range
            .filter(|&pos| max_depth.is_none_or(|m| self.order[pos].1 - base <= m))
            .take(limit);
        html! {
            @for pos in shown {
                @let (i, depth) = self.order[pos];
                @let folded = match (max_depth, self.subtree) {
                    (Some(m), Some(url)) if depth - base == m && self.sizes[pos] > 0 => {
                        Some((self.sizes[pos], url(&self.spans[i])))
                    }
                    _ => None,
                };
                (self.row(&self.spans[i], depth, folded))
            }
        }
    }

    fn row(&self, s: &WfSpan, depth: usize, folded: Option<(usize, String)>) -> Markup {
        let left = s.start.map_or(0.0, |t| self.scale.pct(t));
        let right = s.end.or(s.start).map_or(left, |t| self.scale.pct(t));
        let dur = match (s.start, s.end) {
            (Some(a), Some(b)) => format::duration(b - a),
            (Some(_), None) => "running".to_owned(),
            _ => "—".to_owned(),
        };
        html! {
            div class={ "wf-row" @if let Some(k) = s.kind { " " (k) } }
                tabindex="0" role="button"
                data-span-id=(s.span_id)
                data-parent-id=(s.parent_id.as_deref().unwrap_or(""))
                data-depth=(depth)
                data-detail=(s.detail) {
                div.wf-label style={ "padding-left:" (depth.min(40) * 14 + 4) "px" } {
                    @if let Some((hidden, url)) = &folded {
                        button.wf-more type="button" data-subtree=(url)
                            title={ "show the " (hidden) " spans below" } { "+" (hidden) }
                    }
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

/// `#waterfall`: the rows of `spans` in tree order, bars to scale. Given `subtree` (the
/// URL of a span's hidden rows), past [`ROWS_SHOWN`] rows it folds the deeper levels.
pub fn waterfall(spans: &[WfSpan], subtree: Option<&dyn Fn(&WfSpan) -> String>) -> Markup {
    let order = tree_order(spans);
    let sizes = subtree_sizes(&order);
    let rows = Rows {
        spans,
        order: &order,
        sizes: &sizes,
        scale: Scale::of(spans),
        subtree,
    };
    let (max_depth, limit) = match subtree {
        Some(_) => folding(order.iter().map(|&(_, d)| d), 0, order.len()),
        None => (None, usize::MAX),
    };
    let roots = order.iter().filter(|&&(_, d)| d == 0).count();
    html! {
        div #waterfall .waterfall data-count=(spans.len()) {
            div.wf-axis {
                div.wf-label { "span" }
                div.wf-track {
                    @for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
                        span.wf-tick style={ "left:" (q * 100.0) "%" } {
                            "+" (format::duration(rows.scale.total * q))
                        }
                    }
                }
                div.wf-dur { "duration" }
            }
            @if spans.is_empty() {
                p.muted { "No spans recorded." }
            }
            @if max_depth.is_some() {
                p.muted.wf-folded {
                    @if limit < roots {
                        "The first " (limit) " of " (roots) " top-level spans, folded; the API serves them all."
                    } @else {
                        (spans.len()) " spans: the first levels are shown; + opens a span's subtree."
                    }
                }
            }
            (rows.render(0..order.len(), 0, max_depth, limit))
        }
    }
}

/// The rows under the span `span_id` (a fragment for a folded row's button), deeper levels
/// folded again past [`ROWS_SHOWN`]; `None` when no span has that id.
pub fn subtree(spans: &[WfSpan], span_id: &str, url: &dyn Fn(&WfSpan) -> String) -> Option<Markup> {
    let order = tree_order(spans);
    let at = order
        .iter()
        .position(|&(i, _)| spans[i].span_id == span_id)?;
    let sizes = subtree_sizes(&order);
    let range = at + 1..at + 1 + sizes[at];
    let base = order[at].1 + 1;
    let (max_depth, limit) = folding(
        order[range.clone()].iter().map(|&(_, d)| d),
        base,
        sizes[at],
    );
    let rows = Rows {
        spans,
        order: &order,
        sizes: &sizes,
        scale: Scale::of(spans),
        subtree: Some(url),
    };
    Some(html! {
        div.wf-rows data-under=(span_id) { (rows.render(range, base, max_depth, limit)) }
    })
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
        let markup = waterfall(&spans, None).into_string();
        assert_eq!(markup.matches("class=\"wf-row\"").count(), 2);
    }

    /// A root, `turns` turns under it, `per_turn` spans under each turn.
    fn rollout_tree(turns: usize, per_turn: usize) -> Vec<WfSpan> {
        let mut spans = vec![span("root", None, 0.0)];
        for t in 0..turns {
            let turn = format!("t{t}");
            spans.push(span(&turn, Some("root"), t as f64));
            for c in 0..per_turn {
                spans.push(span(&format!("t{t}-{c}"), Some(&turn), t as f64 + 0.1));
            }
        }
        spans
    }

    fn url(s: &WfSpan) -> String {
        format!("/sub/{}", s.span_id)
    }

    #[test]
    fn a_large_tree_folds_below_the_levels_that_fit_and_opens_by_subtree() {
        let spans = rollout_tree(100, 9);
        let all = waterfall(&spans, None).into_string();
        assert_eq!(all.matches("class=\"wf-row\"").count(), 1001);
        let folded = waterfall(&spans, Some(&url)).into_string();
        assert_eq!(folded.matches("class=\"wf-row\"").count(), 101);
        assert_eq!(folded.matches("class=\"wf-more\"").count(), 100);
        assert!(folded.contains("data-subtree=\"/sub/t7\""));
        assert!(folded.contains(">+9<"));
        let under = subtree(&spans, "t7", &url).unwrap().into_string();
        assert_eq!(under.matches("class=\"wf-row\"").count(), 9);
        assert!(under.contains("data-span-id=\"t7-0\""));
        assert!(under.contains("data-depth=\"2\""));
        assert!(!under.contains("wf-more"));
        assert!(subtree(&spans, "nope", &url).is_none());
        // Few spans never fold.
        let small = waterfall(&rollout_tree(3, 2), Some(&url)).into_string();
        assert_eq!(small.matches("class=\"wf-row\"").count(), 10);
        assert!(!small.contains("wf-more"));
    }

    #[test]
    fn a_flat_trace_past_the_budget_shows_its_first_rows() {
        let spans: Vec<WfSpan> = (0..700)
            .map(|i| span(&format!("s{i}"), None, f64::from(i)))
            .collect();
        let shown = waterfall(&spans, Some(&url)).into_string();
        assert_eq!(shown.matches("class=\"wf-row\"").count(), ROWS_SHOWN);
        assert!(shown.contains("The first 600 of 700 top-level spans"));
    }

    #[test]
    fn subtree_sizes_count_every_row_below() {
        let order = [(0, 0), (1, 1), (2, 2), (3, 1), (4, 0)];
        assert_eq!(subtree_sizes(&order), [3, 1, 0, 0, 0]);
    }

    #[test]
    fn names_are_escaped() {
        let mut s = span("<script>", None, 0.0);
        s.name = "<script>alert(1)</script>".into();
        let markup = waterfall(&[s], None).into_string();
        assert!(!markup.contains("<script>alert"));
        assert!(markup.contains("&lt;script&gt;"));
    }
}
