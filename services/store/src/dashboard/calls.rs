//! What a rollout page reads out of span attributes: LLM calls (prompt → completion, token
//! counts and ids) and rewards, in the conventions the spans arrive in: OpenTelemetry's
//! `gen_ai.*` (LiteLLM, AgentOps, OpenLLMetry, and agl-vllm's proxy, which also records the
//! raw vLLM fields as `llm.hosted_vllm.*` on a child span), agentlightning's reward spans
//! (`agentlightning.reward`, 0.3 and 1.0 attribute names) and the older AgentOps reward
//! (`agentops.task.output` = `{"type": "reward", "value": …}`).
//!
//! Only spans whose text mentions one of these names are parsed at all, so a rollout of
//! thousands of tool spans costs a substring search each.

use serde_json::{Map, Value};

/// One message of a prompt or a completion.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// Why generation stopped (completions only).
    pub finish_reason: Option<String>,
}

/// An LLM call recorded in a span.
#[derive(Debug, Clone, Default)]
pub struct LlmCall {
    pub span_id: String,
    pub name: String,
    pub model: Option<String>,
    pub prompt: Vec<Message>,
    pub completion: Vec<Message>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    /// The token ids as recorded (text: a JSON or Python list).
    pub prompt_token_ids: Option<String>,
    pub response_token_ids: Option<String>,
    /// When the call started (epoch seconds), for ordering.
    pub start: Option<f64>,
    pub latency: Option<f64>,
    pub time_to_first_token: Option<f64>,
    pub streaming: bool,
}

/// A cheap test on a span's JSON text: could it be an LLM call or carry token ids?
pub fn may_be_llm(text: &str) -> bool {
    text.contains("\"gen_ai.") || text.contains("\"llm.hosted_vllm.")
}

/// A cheap test on a span's JSON text and name: could it be a reward?
pub fn may_be_reward(name: &str, text: &str) -> bool {
    name == "agentlightning.reward" || text.contains("agentops.task.output")
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn int_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn float_of(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// `prefix.{i}.field` messages, in index order.
fn messages(attrs: &Map<String, Value>, prefix: &str) -> Vec<Message> {
    let mut out: Vec<(usize, Message)> = Vec::new();
    for (key, value) in attrs {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        let Some((index, field)) = rest.split_once('.') else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        let slot = match out.iter().position(|(i, _)| *i == index) {
            Some(p) => p,
            None => {
                out.push((index, Message::default()));
                out.len() - 1
            }
        };
        let m = &mut out[slot].1;
        match field {
            "role" => m.role = text_of(value).unwrap_or_default(),
            "content" => m.content = text_of(value).unwrap_or_default(),
            "finish_reason" => m.finish_reason = text_of(value),
            f if f.starts_with("tool_calls") || f.starts_with("function_call") => {
                if let Some(t) = text_of(value) {
                    if !m.content.is_empty() {
                        m.content.push('\n');
                    }
                    m.content.push_str(f);
                    m.content.push_str(": ");
                    m.content.push_str(&t);
                }
            }
            _ => {}
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, m)| m).collect()
}

/// The first of `keys` present in `attrs`.
fn first<'a>(attrs: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter()
        .find_map(|k| attrs.get(*k).filter(|v| !v.is_null()))
}

/// The LLM call a span records, if it records one (a prompt or a completion).
pub fn llm_call(
    span_id: &str,
    name: &str,
    attrs: &Map<String, Value>,
    start: Option<f64>,
    end: Option<f64>,
) -> Option<LlmCall> {
    let prompt = messages(attrs, "gen_ai.prompt.");
    let completion = messages(attrs, "gen_ai.completion.");
    if prompt.is_empty() && completion.is_empty() {
        return None;
    }
    let mut call = LlmCall {
        span_id: span_id.to_owned(),
        name: name.to_owned(),
        model: first(attrs, &["gen_ai.response.model", "gen_ai.request.model"]).and_then(text_of),
        prompt,
        completion,
        prompt_tokens: int_of(first(
            attrs,
            &["gen_ai.usage.prompt_tokens", "gen_ai.usage.input_tokens"],
        )),
        completion_tokens: int_of(first(
            attrs,
            &[
                "gen_ai.usage.completion_tokens",
                "gen_ai.usage.output_tokens",
            ],
        )),
        start,
        latency: start.zip(end).map(|(a, b)| b - a),
        time_to_first_token: float_of(first(
            attrs,
            &[
                "gen_ai.server.time_to_first_token",
                "llm.time_to_first_token",
                "agl.time_to_first_token",
            ],
        )),
        streaming: matches!(
            first(attrs, &["llm.is_streaming", "gen_ai.request.stream"]),
            Some(Value::Bool(true))
        ) || matches!(
            first(attrs, &["llm.is_streaming"]),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true")
        ),
        ..LlmCall::default()
    };
    add_token_ids(&mut call, attrs);
    Some(call)
}

/// Token ids recorded on `attrs` (the call's span, or the raw child span of the proxy).
pub fn add_token_ids(call: &mut LlmCall, attrs: &Map<String, Value>) {
    if call.prompt_token_ids.is_none() {
        call.prompt_token_ids = first(
            attrs,
            &["llm.hosted_vllm.prompt_token_ids", "prompt_token_ids"],
        )
        .and_then(text_of);
    }
    if call.response_token_ids.is_none() {
        call.response_token_ids = first(
            attrs,
            &[
                "llm.hosted_vllm.response_token_ids",
                "llm.hosted_vllm.choices[0].token_ids",
                "response_token_ids",
            ],
        )
        .and_then(text_of);
    }
}

/// Whether a span only carries the raw request/response of its parent's call.
pub fn has_token_ids(attrs: &Map<String, Value>) -> bool {
    attrs.contains_key("llm.hosted_vllm.prompt_token_ids")
        || attrs.contains_key("llm.hosted_vllm.response_token_ids")
}

/// The value of a reward span, if it is one.
pub fn reward(name: &str, attrs: &Map<String, Value>) -> Option<Option<f64>> {
    if let Some(Value::String(output)) = attrs.get("agentops.task.output") {
        let parsed: Value = serde_json::from_str(output).ok()?;
        if parsed.get("type").and_then(Value::as_str) == Some("reward") {
            return Some(float_of(parsed.get("value")));
        }
        return None;
    }
    if name != "agentlightning.reward" {
        return None;
    }
    let known = first(
        attrs,
        &[
            "agentlightning.reward.primary",
            "agentlightning.reward.0.value",
            "reward",
            "value",
        ],
    );
    let value = float_of(known).or_else(|| {
        attrs
            .iter()
            .filter(|(k, _)| k.starts_with("agentlightning.reward") && !k.contains("metadata"))
            .find_map(|(_, v)| float_of(Some(v)))
    });
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_litellm_style_span_is_a_call_in_message_order() {
        let a = attrs(json!({
            "gen_ai.request.model": "agl-model",
            "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "hi",
            "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "be brief",
            "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "hello",
            "gen_ai.completion.0.finish_reason": "stop",
            "gen_ai.usage.prompt_tokens": 7, "gen_ai.usage.completion_tokens": "2",
            "llm.is_streaming": "True",
        }));
        let call = llm_call("s1", "litellm_request", &a, Some(1.0), Some(1.5)).unwrap();
        assert_eq!(call.prompt.len(), 2);
        assert_eq!(call.prompt[0].role, "system");
        assert_eq!(call.prompt[1].content, "hi");
        assert_eq!(call.completion[0].content, "hello");
        assert_eq!(call.completion[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            (call.prompt_tokens, call.completion_tokens),
            (Some(7), Some(2))
        );
        assert_eq!(call.model.as_deref(), Some("agl-model"));
        assert_eq!(call.latency, Some(0.5));
        assert!(call.streaming);
        assert!(llm_call("s2", "tool", &attrs(json!({"x": 1})), None, None).is_none());
    }

    #[test]
    fn token_ids_come_from_the_raw_span() {
        let mut call = LlmCall::default();
        let raw = attrs(json!({
            "llm.hosted_vllm.prompt_token_ids": "[1, 2, 3]",
            "llm.hosted_vllm.response_token_ids": "[[4, 5]]",
        }));
        assert!(has_token_ids(&raw));
        add_token_ids(&mut call, &raw);
        assert_eq!(call.prompt_token_ids.as_deref(), Some("[1, 2, 3]"));
        assert_eq!(call.response_token_ids.as_deref(), Some("[[4, 5]]"));
    }

    #[test]
    fn rewards_in_every_recorded_form() {
        let agentops =
            attrs(json!({"agentops.task.output": "{\"type\": \"reward\", \"value\": 0.5}"}));
        assert_eq!(reward("agentops.task", &agentops), Some(Some(0.5)));
        let other_output = attrs(json!({"agentops.task.output": "{\"type\": \"text\"}"}));
        assert_eq!(reward("agentops.task", &other_output), None);
        let v03 = attrs(
            json!({"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 1.0}),
        );
        assert_eq!(reward("agentlightning.reward", &v03), Some(Some(1.0)));
        let v10 = attrs(json!({"agentlightning.reward.primary": "0.25"}));
        assert_eq!(reward("agentlightning.reward", &v10), Some(Some(0.25)));
        assert_eq!(reward("tool", &v10), None);
    }
}
