//! The HTML dashboard: the traces list, a trace's waterfall and logs, a span's fragment,
//! the SDK's session link, the shared assets, and the key in front of them.

use std::collections::HashMap;
use std::time::Instant;

use agl_agentops::AgentopsArgs;
use agl_common::auth::KeyArgs;
use agl_common::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use agl_common::otlp::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use agl_common::otlp::proto::trace::v1::{Span, Status};
use agl_common::otlp::string_attribute;
use prost::Message as _;
use serde_json::json;

use crate::helpers::{TestServer, spans_request, spawn, spawn_with, test_args, trace_hex};

const T0: u64 = 1_700_000_000_000_000_000;

fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

/// A span of the trace whose id bytes are all `trace`, starting `start_ms` after T0.
fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, start_ms: u64) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.to_owned(),
        kind: 1,
        start_time_unix_nano: T0 + start_ms * 1_000_000,
        end_time_unix_nano: T0 + (start_ms + 100) * 1_000_000,
        ..Span::default()
    }
}

/// Three levels: a session root, an agent below it, and below that a tool, a failed task
/// and a model call.
fn three_levels(trace: u8) -> ExportTraceServiceRequest {
    let mut root = span(trace, 1, None, "demo.session", 0);
    root.end_time_unix_nano = T0 + 2_000_000_000;
    root.attributes = vec![string_attribute("agentops.span.kind", "session")];
    let agent = span(trace, 2, Some(1), "Researcher.agent", 10);
    let mut tool = span(trace, 3, Some(2), "search.tool", 20);
    tool.attributes = vec![
        string_attribute("agentops.span.kind", "tool"),
        string_attribute("agentops.tool.input", r#"{"query": "waterfalls"}"#),
        int_attribute("attempt", 2),
    ];
    let mut failed = span(trace, 4, Some(2), "summarise.task", 30);
    failed.status = Some(Status {
        code: 2,
        message: "boom".into(),
    });
    let mut llm = span(trace, 5, Some(2), "openai.chat.completion", 40);
    llm.attributes = vec![
        string_attribute("gen_ai.request.model", "gpt-4o-mini"),
        string_attribute("gen_ai.prompt.0.role", "user"),
        string_attribute("gen_ai.prompt.0.content", "What is 2+2?"),
        string_attribute("gen_ai.completion.0.role", "assistant"),
        string_attribute("gen_ai.completion.0.content", "4"),
        int_attribute("gen_ai.usage.prompt_tokens", 12),
        int_attribute("gen_ai.usage.completion_tokens", 1),
    ];
    // Children first, as the SDK's batches often arrive.
    spans_request(vec![llm, failed, tool, agent, root])
}

async fn send(s: &TestServer, request: &ExportTraceServiceRequest) {
    let response = s
        .post_otlp("/v1/traces", request.encode_to_vec(), &[])
        .await;
    assert_eq!(response.status(), 200);
}

async fn get_html(s: &TestServer, path: &str) -> (u16, String) {
    let response = s.client.get(s.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    if status != 307 {
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=utf-8",
            "{path}"
        );
    }
    (status, response.text().await.unwrap())
}

/// The attributes of every opening tag whose class list starts with `class`.
fn tags_with_class(html: &str, class: &str) -> Vec<HashMap<String, String>> {
    let needle = format!("class=\"{class}");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&needle) {
        let open = rest[..at].rfind('<').unwrap();
        let close = at + rest[at..].find('>').unwrap();
        let tag = &rest[open..close];
        let mut attrs = HashMap::new();
        let mut t = tag;
        while let Some(eq) = t.find("=\"") {
            let name = t[..eq].rsplit(' ').next().unwrap().to_owned();
            let value_end = eq + 2 + t[eq + 2..].find('"').unwrap();
            attrs.insert(name, t[eq + 2..value_end].to_owned());
            t = &t[value_end + 1..];
        }
        out.push(attrs);
        rest = &rest[close..];
    }
    out
}

#[tokio::test]
async fn the_list_shows_each_trace_with_its_counts_newest_first() {
    let s = spawn().await;
    let (status, empty) = get_html(&s, "/ui/traces").await;
    assert_eq!(status, 200);
    assert!(
        empty.contains("id=\"traces-region\" data-live=\"3\""),
        "{empty}"
    );
    assert!(empty.contains("AGENTOPS_API_ENDPOINT"), "{empty}");
    assert!(!empty.contains("id=\"traces\""));

    send(&s, &three_levels(0xa1)).await;
    send(
        &s,
        &spans_request(vec![span(0xb2, 1, None, "later.session", 0)]),
    )
    .await;
    let (_, page) = get_html(&s, "/ui/traces").await;
    let rows = tags_with_class(&page, "trace\"");
    let ids: Vec<&str> = rows.iter().map(|r| r["data-trace-id"].as_str()).collect();
    assert_eq!(ids, [trace_hex(0xb2), trace_hex(0xa1)]);
    let row = &page[page.find(&trace_hex(0xa1)).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains(&format!(
        "class=\"trace-link\" href=\"/ui/traces/{}\"",
        trace_hex(0xa1)
    )));
    assert!(row.contains(">demo.session</a>"), "{row}");
    assert!(row.contains("<td class=\"spans\">5</td>"), "{row}");
    assert!(row.contains("<td class=\"llm-calls\">1</td>"), "{row}");
    assert!(row.contains("</span> 1</td>"), "one error: {row}");
    assert!(row.contains("2.00 s"), "duration: {row}");
    assert!(
        page.contains("Spans held</div><div class=\"value\">6</div>"),
        "{page}"
    );
    let (_, second) = get_html(&s, "/ui/traces?offset=1&limit=1").await;
    let rows = tags_with_class(&second, "trace\"");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["data-trace-id"], trace_hex(0xa1));
    assert!(second.contains("<span id=\"total\">2</span>"), "{second}");
    s.stop().await;
}

#[tokio::test]
async fn a_trace_page_nests_its_spans_and_shows_its_logs() {
    let s = spawn().await;
    send(&s, &three_levels(0xc3)).await;
    let hex = trace_hex(0xc3);
    let long = "x".repeat(70 * 1024);
    for text in ["marker: investigating waterfalls", long.as_str()] {
        let response = s
            .client
            .post(s.url("/v4/logs/upload/"))
            .header("trace-id", &hex)
            .json(&json!({ "body": text }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    // Ids are compared case-insensitively.
    let (status, page) = get_html(&s, &format!("/ui/traces/{}", hex.to_uppercase())).await;
    assert_eq!(status, 200);
    let rows = tags_with_class(&page, "wf-row");
    let shape: Vec<(String, &str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["data-span-id"].clone(),
                r["data-parent-id"].as_str(),
                r["data-depth"].as_str(),
                r["class"].as_str(),
            )
        })
        .collect();
    let id = |b: u8| format!("{b:02x}").repeat(8);
    assert_eq!(
        shape,
        [
            (id(1), "", "0", "wf-row"),
            (id(2), id(1).as_str(), "1", "wf-row"),
            (id(3), id(2).as_str(), "2", "wf-row"),
            (id(4), id(2).as_str(), "2", "wf-row error"),
            (id(5), id(2).as_str(), "2", "wf-row llm"),
        ]
    );
    assert_eq!(
        rows[2]["data-detail"],
        format!("/ui/traces/{hex}/spans/{}", id(3))
    );
    assert!(
        page.contains("gpt-4o-mini · 13 tok"),
        "the model call's note"
    );
    assert!(page.contains("id=\"span-detail\""), "{page}");
    assert!(page.contains(&format!("<code id=\"trace-id\">{hex}</code>")));
    assert!(page.contains("<dd id=\"span-count\">5</dd>"));

    let logs = &page[page.find("id=\"logs\"").unwrap()..];
    assert_eq!(tags_with_class(logs, "log\"").len(), 2);
    assert!(logs.contains("marker: investigating waterfalls"));
    assert!(logs.contains("Showing the first 64.0 KiB of 70.0 KiB"));
    assert!(!logs.contains(&"x".repeat(65 * 1024)));
    assert!(page.contains("service.name"));

    let (status, missing) = get_html(&s, &format!("/ui/traces/{}", trace_hex(0x77))).await;
    assert_eq!(status, 404);
    assert!(missing.contains("404 Not Found"), "{missing}");
    s.stop().await;
}

#[tokio::test]
async fn a_span_fragment_shows_its_attributes_and_its_model_call() {
    let s = spawn().await;
    send(&s, &three_levels(0xd4)).await;
    let base = format!("/ui/traces/{}/spans/", trace_hex(0xd4));
    let id = |b: u8| format!("{b:02x}").repeat(8);

    let (status, tool) = get_html(&s, &format!("{base}{}", id(3))).await;
    assert_eq!(status, 200);
    assert!(tool.starts_with("<div class=\"span-attrs\""), "{tool}");
    assert!(tool.contains("<h3>search.tool</h3>"));
    assert!(tool.contains("<tr data-key=\"attempt\"><td>attempt</td><td><code>2</code></td>"));
    // A string holding JSON is shown pretty-printed.
    assert!(
        tool.contains("&quot;query&quot;: &quot;waterfalls&quot;"),
        "{tool}"
    );

    let (_, llm) = get_html(&s, &format!("{base}{}", id(5).to_uppercase())).await;
    let call = &llm[llm.find("class=\"llm-call\"").expect("a model call view")..];
    let prompt = call.find("What is 2+2?").unwrap();
    let completion = call.find("<div class=\"llm-completion\">").unwrap();
    assert!(prompt < completion, "prompt before completion");
    assert!(call[completion..].contains("<span class=\"role\">assistant</span>4"));
    assert!(call.contains("prompt tokens <strong><code>12</code></strong>"));
    assert!(llm.find("llm-call").unwrap() < llm.find("Attributes").unwrap());

    let (_, failed) = get_html(&s, &format!("{base}{}", id(4))).await;
    assert!(failed.contains("s-error") && failed.contains("boom"));

    let (status, missing) = get_html(&s, &format!("{base}{}", id(9))).await;
    assert_eq!(status, 404);
    assert!(missing.contains("span-attrs"));
    s.stop().await;
}

#[tokio::test]
async fn span_names_and_attributes_are_escaped() {
    let s = spawn().await;
    let mut evil = span(0xe5, 1, None, "<script>alert(1)</script>", 0);
    evil.attributes = vec![string_attribute(
        "<b>key</b>",
        "<img src=x onerror=alert(2)>",
    )];
    send(&s, &spans_request(vec![evil])).await;
    let hex = trace_hex(0xe5);
    for path in [
        "/ui/traces".to_owned(),
        format!("/ui/traces/{hex}"),
        format!("/ui/traces/{hex}/spans/{}", "01".repeat(8)),
    ] {
        let (status, page) = get_html(&s, &path).await;
        assert_eq!(status, 200, "{path}");
        assert!(!page.contains("<script>alert"), "{path}: {page}");
        assert!(!page.contains("<img src=x"), "{path}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}"
        );
    }
    // An id in the path is escaped on the error pages too.
    let (status, page) = get_html(&s, "/ui/traces/%3Cscript%3Ex").await;
    assert_eq!(status, 404);
    assert!(!page.contains("<script>x") && page.contains("&lt;script&gt;x"));
    s.stop().await;
}

#[tokio::test]
async fn the_session_link_opens_the_trace_page() {
    let s = spawn().await;
    let hex = "ABCDEF0123456789ABCDEF0123456789";
    for (query, location) in [
        (
            format!("trace_id={hex}"),
            format!("/ui/traces/{}", hex.to_lowercase()),
        ),
        ("trace_id=12345".to_owned(), "/ui/traces".to_owned()),
        ("trace_id=not-hex".to_owned(), "/ui/traces".to_owned()),
        (String::new(), "/ui/traces".to_owned()),
    ] {
        let response = s
            .client
            .get(s.url(&format!("/sessions?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 307, "{query}");
        assert_eq!(response.headers()["location"], location.as_str(), "{query}");
    }
    // The server's own URL leads to the list too.
    let response = s.client.get(s.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()["location"], "/ui/traces");
    s.stop().await;
}

#[tokio::test]
async fn the_assets_are_served() {
    let s = spawn().await;
    for (path, kind) in [
        ("/ui/assets/agl.css", "text/css"),
        ("/ui/assets/agl.js", "text/javascript"),
        ("/ui/assets/icon.svg", "image/svg+xml"),
    ] {
        let response = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(!response.bytes().await.unwrap().is_empty());
    }
    let (_, page) = get_html(&s, "/ui/traces").await;
    assert!(page.contains("href=\"/ui/assets/agl.css?v="));
    s.stop().await;
}

#[tokio::test]
async fn a_keyed_server_asks_a_browser_for_the_key() {
    const KEY: &str = "dash-key-5e0c";
    let s = spawn_with(AgentopsArgs {
        key: KeyArgs {
            keys: vec![KEY.into()],
            ..KeyArgs::default()
        },
        ..test_args()
    })
    .await;
    let response = s.client.get(s.url("/ui/traces")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let challenges: Vec<&str> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic")),
        "{challenges:?}"
    );
    for user in ["agl", ""] {
        let response = s
            .client
            .get(s.url("/ui/traces"))
            .basic_auth(user, Some(KEY))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "user {user:?}");
    }
    let response = s
        .client
        .get(s.url("/ui/traces"))
        .basic_auth("agl", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // The assets carry no data and stay open.
    let response = s
        .client
        .get(s.url("/ui/assets/agl.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    s.stop().await;
}

/// A 5 000-span trace (a chain of fan-outs) renders quickly. Debug builds are an order of
/// magnitude slower than release, so the bound here is loose; the release figure is in
/// the report of the change that added the dashboard.
#[tokio::test]
async fn a_large_trace_renders_quickly() {
    let s = spawn().await;
    let mut root = span(0xf6, 0, None, "big.session", 0);
    root.span_id = 1u64.to_be_bytes().to_vec();
    let mut spans = vec![root];
    // Span n has id n + 1 and hangs under the span of id n / 10 + 1: ten children each.
    for n in 1..5000u64 {
        let mut sp = span(0xf6, 0, None, &format!("step-{n}"), n);
        sp.span_id = (n + 1).to_be_bytes().to_vec();
        sp.parent_span_id = (n / 10 + 1).to_be_bytes().to_vec();
        spans.push(sp);
    }
    send(&s, &spans_request(spans)).await;
    let path = format!("/ui/traces/{}", trace_hex(0xf6));
    let _ = get_html(&s, &path).await;
    let started = Instant::now();
    let (status, page) = get_html(&s, &path).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(tags_with_class(&page, "wf-row").len(), 5000);
    assert!(took.as_millis() < 2000, "took {took:?}");
    s.stop().await;
}
