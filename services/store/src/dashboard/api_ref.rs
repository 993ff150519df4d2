//! The API reference page: `/openapi.json` (the same document) as one readable page,
//! operations grouped by tag, each with its parameters, request body and answers. Rendered
//! once: the document is fixed at build time.

use std::sync::OnceLock;

use agl_common::ui::maud::{Markup, PreEscaped, html};
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The rendered page body.
pub(super) fn page() -> Markup {
    static PAGE: OnceLock<String> = OnceLock::new();
    PreEscaped(
        PAGE.get_or_init(|| render(&crate::api::openapi::document()).into_string())
            .clone(),
    )
}

/// `#/components/schemas/Name` → `Name`.
fn schema_name(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    if let Some(items) = schema.get("items") {
        return format!("[{}]", schema_name(items));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            return list.iter().map(schema_name).collect::<Vec<_>>().join(" | ");
        }
    }
    schema
        .get("type")
        .map(|t| match t {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| "any".to_owned())
}

fn render(doc: &str) -> Markup {
    let v: Value = serde_json::from_str(doc).unwrap_or(Value::Null);
    let info = &v["info"];
    let mut ops: Vec<(String, String, &Value)> = Vec::new();
    if let Some(paths) = v.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for m in METHODS {
                if let Some(op) = item.get(m) {
                    ops.push((path.clone(), m.to_owned(), op));
                }
            }
        }
    }
    let tag = |op: &Value| {
        op.get("tags")
            .and_then(|t| t.get(0))
            .and_then(Value::as_str)
            .unwrap_or("other")
            .to_owned()
    };
    let mut tags: Vec<String> = ops.iter().map(|(_, _, op)| tag(op)).collect();
    tags.sort();
    tags.dedup();
    html! {
        h1 { (info["title"].as_str().unwrap_or("API")) " " span.muted { (info["version"].as_str().unwrap_or("")) } }
        p {
            "Every operation of the store's HTTP API, from "
            a href="/openapi.json" { "/openapi.json" }
            " (OpenAPI 3). Requests send the key as "
            code { "Authorization: Bearer KEY" } " when the store has one."
        }
        div #api {
            @for t in &tags {
                h2 style="margin-top:18px" { (t) }
                @for (path, method, op) in ops.iter().filter(|(_, _, op)| &tag(op) == t) {
                    details.api-op data-path=(path) data-method=(method) {
                        summary {
                            span class={ "method m-" (method) } { (method.to_uppercase()) }
                            code { (path) }
                            span.muted { (op.get("summary").and_then(Value::as_str).unwrap_or("")) }
                        }
                        div.body {
                            @if let Some(d) = op.get("description").and_then(Value::as_str) { p { (d) } }
                            @if let Some(params) = op.get("parameters").and_then(Value::as_array).filter(|p| !p.is_empty()) {
                                h4 { "Parameters" }
                                table {
                                    tr { th { "name" } th { "in" } th { "type" } th { "required" } th { "description" } }
                                    @for p in params {
                                        tr {
                                            td.mono { (p["name"].as_str().unwrap_or("")) }
                                            td { (p["in"].as_str().unwrap_or("")) }
                                            td.mono { (schema_name(&p["schema"])) }
                                            td { @if p["required"].as_bool() == Some(true) { "yes" } }
                                            td { (p.get("description").and_then(Value::as_str).unwrap_or("")) }
                                        }
                                    }
                                }
                            }
                            @if let Some(body) = op.get("requestBody") {
                                h4 { "Request body" }
                                @if let Some(content) = body.get("content").and_then(Value::as_object) {
                                    @for (kind, c) in content {
                                        p { code { (kind) } " " span.mono { (schema_name(&c["schema"])) } }
                                    }
                                }
                            }
                            @if let Some(responses) = op.get("responses").and_then(Value::as_object) {
                                h4 { "Responses" }
                                table {
                                    @for (code, r) in responses {
                                        tr {
                                            td.mono { (code) }
                                            td { (r.get("description").and_then(Value::as_str).unwrap_or("")) }
                                            td.mono {
                                                @if let Some(content) = r.get("content").and_then(Value::as_object) {
                                                    @for c in content.values() { (schema_name(&c["schema"])) " " }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_of_the_document_is_on_the_page() {
        let doc = crate::api::openapi::document();
        let v: Value = serde_json::from_str(&doc).unwrap();
        let count: usize = v["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| METHODS.iter().filter(|m| item.get(**m).is_some()).count())
            .sum();
        assert!(count > 20, "{count} operations");
        let html = render(&doc).into_string();
        assert_eq!(html.matches("class=\"api-op\"").count(), count);
        assert!(html.contains("/v1/agl/rollouts"));
    }
}
