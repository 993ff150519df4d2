//! What a generation request gets on its way to vLLM, whichever proxy forwards it.

use serde_json::{Map, Value};

use crate::call::Endpoint;

/// Asks for the token ids of prompt and completion (vLLM's `return_token_ids`), and, with
/// `logprobs`, for the chosen tokens' logprobs unless the agent asked for them already
/// (chat: `logprobs: true`; text completions: `logprobs: N`, at least the chosen one).
pub fn ask_for_tokens(body: &mut Map<String, Value>, endpoint: Endpoint, logprobs: bool) {
    body.insert("return_token_ids".into(), Value::Bool(true));
    if !logprobs {
        return;
    }
    match endpoint {
        Endpoint::Chat => {
            if body.get("logprobs") != Some(&Value::Bool(true)) {
                body.insert("logprobs".into(), Value::Bool(true));
            }
        }
        Endpoint::Completions => {
            if body.get("logprobs").and_then(Value::as_u64).is_none() {
                body.insert("logprobs".into(), Value::from(1));
            }
        }
    }
}

/// Asks a stream for its usage in a last chunk (`stream_options.include_usage`).
pub fn ask_for_stream_usage(body: &mut Map<String, Value>) {
    let options = body
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    if let Some(options) = options.as_object_mut() {
        options.insert("include_usage".into(), Value::Bool(true));
    }
}

/// Whether the request asks for a stream; `Err` for a `stream` that is not a boolean.
pub fn wants_stream(body: &Map<String, Value>) -> Result<bool, &'static str> {
    match body.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err("`stream` must be a boolean"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_ids_always_logprobs_unless_given() {
        let mut chat = json!({"messages": []}).as_object().unwrap().clone();
        ask_for_tokens(&mut chat, Endpoint::Chat, true);
        assert_eq!(chat["return_token_ids"], true);
        assert_eq!(chat["logprobs"], true);
        let mut text = json!({"prompt": "x", "logprobs": 5})
            .as_object()
            .unwrap()
            .clone();
        ask_for_tokens(&mut text, Endpoint::Completions, true);
        assert_eq!(text["logprobs"], 5, "the agent's own number stays");
        let mut plain = json!({}).as_object().unwrap().clone();
        ask_for_tokens(&mut plain, Endpoint::Chat, false);
        assert!(plain.get("logprobs").is_none());
        let mut stream = json!({"stream_options": 3}).as_object().unwrap().clone();
        ask_for_stream_usage(&mut stream);
        assert_eq!(stream["stream_options"], json!({"include_usage": true}));
        assert_eq!(wants_stream(&stream), Ok(false));
        assert!(wants_stream(json!({"stream": "yes"}).as_object().unwrap()).is_err());
    }
}
