//! One generation call as the proxy saw it, and what it adds up to once parsed.
//!
//! The request path only copies chunks (reference-counted [`Bytes`]) into a
//! [`CallRecord`]; the [`Parsed`] view (the complete response, the time to the first
//! token, token counts, the error if any) is computed afterwards by the recorder.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::Value;

use crate::sse::{Accumulator, EventParser};

/// The generation endpoints whose calls are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completions,
}

impl Endpoint {
    /// The endpoint of an upstream path, if it is a generation endpoint.
    pub fn from_path(path: &str) -> Option<Self> {
        match path.trim_end_matches('/') {
            "/v1/chat/completions" => Some(Self::Chat),
            "/v1/completions" => Some(Self::Completions),
            _ => None,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "completions",
        }
    }

    /// LiteLLM's `call_type` of such a call, which upstream records as `llm.request.type`.
    pub fn call_type(self) -> &'static str {
        match self {
            Self::Chat => "acompletion",
            Self::Completions => "atext_completion",
        }
    }
}

/// The rollout, attempt and sequence id a call is recorded under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    /// The rollout id from the path.
    pub rollout_id: String,
    /// The attempt id from the path.
    pub attempt_id: String,
    /// The id the store issued when the call arrived.
    pub sequence_id: i64,
}

/// How the exchange with vLLM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// vLLM's answer reached the agent in full (whatever its status).
    Completed,
    /// The agent went away first; the upstream request was dropped (which aborts it).
    ClientDisconnected,
    /// The upstream response broke off.
    UpstreamFailed(String),
    /// vLLM could not be reached at all.
    Unreachable(String),
}

/// Everything kept of one generation call until it is recorded.
#[derive(Debug)]
pub struct CallRecord {
    /// Chat or text completion.
    pub endpoint: Endpoint,
    /// Whether the agent asked for a stream.
    pub stream: bool,
    /// Set for calls on a rollout path that got a sequence id.
    pub tracking: Option<Tracking>,
    /// The upstream path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The JSON sent to vLLM (after `return_token_ids` and the other additions).
    pub request: Value,
    /// Wall-clock time the call arrived.
    pub started_wall: SystemTime,
    /// When the call arrived.
    pub started: Instant,
    /// When the request went to vLLM.
    pub sent: Instant,
    /// vLLM's status, once it answered.
    pub status: Option<u16>,
    /// The response bytes in the chunks they arrived in, with their arrival time.
    pub chunks: Vec<(Instant, Bytes)>,
    /// The response outgrew `--max-record-bytes` and was not kept.
    pub truncated: bool,
    /// When the exchange ended.
    pub ended: Instant,
    /// How it ended.
    pub outcome: Outcome,
}

/// What a call adds up to.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The complete response (for streams: rebuilt from the chunks), or vLLM's error body.
    pub response: Option<Value>,
    /// Why the call failed, if it did.
    pub error: Option<String>,
    /// Streams: time from the call's arrival to the first generated token.
    pub ttft: Option<Duration>,
    /// Prompt tokens (usage, else the prompt token ids).
    pub prompt_tokens: Option<u64>,
    /// Generated tokens (usage, else the token ids of all choices).
    pub completion_tokens: Option<u64>,
    /// The metric label of the outcome (`ok`, `upstream_error`, …).
    pub outcome: &'static str,
}

impl CallRecord {
    /// Parses what was kept.
    pub fn parse(&self) -> Parsed {
        let mut parsed = Parsed {
            outcome: "ok",
            ..Parsed::default()
        };
        let success = self.status.is_some_and(|s| (200..300).contains(&s));
        if self.truncated {
            parsed.error = Some("response larger than --max-record-bytes, not recorded".into());
        } else if success && self.stream {
            let mut parser = EventParser::default();
            let mut acc = Accumulator::default();
            let mut first_token = None;
            for (at, chunk) in &self.chunks {
                parser.feed(chunk, |event| {
                    if acc.push(event) && first_token.is_none() {
                        first_token = Some(*at);
                    }
                });
            }
            parser.finish(|event| {
                acc.push(event);
            });
            parsed.ttft = first_token.map(|t| t.saturating_duration_since(self.started));
            if let Some(error) = acc.error() {
                parsed.error = Some(error_message(error));
                parsed.outcome = "upstream_error";
            }
            parsed.response = Some(acc.finish());
        } else if !self.chunks.is_empty() {
            let body = self.body();
            match serde_json::from_slice::<Value>(&body) {
                Ok(value) => {
                    if !success {
                        parsed.error = Some(error_message(&value));
                    }
                    parsed.response = Some(value);
                }
                Err(err) if success => {
                    parsed.error = Some(format!("vllm's response is not json: {err}"));
                }
                Err(_) => {
                    parsed.error = Some(String::from_utf8_lossy(&body).chars().take(500).collect());
                }
            }
        }
        if !success && self.status.is_some() {
            parsed.outcome = "upstream_error";
            if parsed.error.is_none() {
                parsed.error = Some(format!("vllm answered {}", self.status.unwrap_or(0)));
            }
        }
        match &self.outcome {
            Outcome::Completed => {}
            Outcome::ClientDisconnected => {
                parsed.outcome = "client_disconnected";
                parsed.error =
                    Some("the client disconnected before the response was complete".into());
            }
            Outcome::UpstreamFailed(why) => {
                parsed.outcome = "upstream_failed";
                parsed.error = Some(format!("vllm's response broke off: {why}"));
            }
            Outcome::Unreachable(why) => {
                parsed.outcome = "unreachable";
                parsed.error = Some(why.clone());
            }
        }
        if let Some(response) = &parsed.response {
            let (prompt, completion) = token_counts(response);
            parsed.prompt_tokens = prompt;
            parsed.completion_tokens = completion;
        }
        parsed
    }

    /// The response body as one buffer.
    pub fn body(&self) -> Bytes {
        match self.chunks.as_slice() {
            [(_, only)] => only.clone(),
            chunks => {
                let mut out = Vec::with_capacity(chunks.iter().map(|(_, c)| c.len()).sum());
                for (_, chunk) in chunks {
                    out.extend_from_slice(chunk);
                }
                Bytes::from(out)
            }
        }
    }
}

/// The message of an error body: OpenAI's `{"error": {"message"}}`, vLLM's older
/// `{"object": "error", "message"}`, FastAPI's `{"detail"}`, else the JSON itself.
pub fn error_message(value: &Value) -> String {
    let candidates = [
        value.pointer("/error/message"),
        value.get("message"),
        value.get("detail"),
        value.get("error"),
    ];
    match candidates.into_iter().flatten().next() {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => value.to_string(),
    }
}

/// The prompt token ids of a response: top-level (chat), else of the first choice (text
/// completions).
pub fn prompt_token_ids(response: &Value) -> Option<&Vec<Value>> {
    response
        .get("prompt_token_ids")
        .and_then(Value::as_array)
        .or_else(|| response.pointer("/choices/0/prompt_token_ids")?.as_array())
}

/// The generated token ids of each choice, in choice order: `choices[i].token_ids`, else
/// the older top-level `response_token_ids` (upstream's patched vLLM). `None` when the
/// response carries none.
pub fn response_token_ids(response: &Value) -> Option<Vec<Vec<Value>>> {
    let choices = response.get("choices").and_then(Value::as_array);
    if let Some(choices) = choices
        && choices
            .iter()
            .any(|c| c.get("token_ids").is_some_and(Value::is_array))
    {
        return Some(
            choices
                .iter()
                .map(|c| {
                    c.get("token_ids")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .collect(),
        );
    }
    let legacy = response.get("response_token_ids")?.as_array()?;
    Some(
        legacy
            .iter()
            .map(|ids| ids.as_array().cloned().unwrap_or_default())
            .collect(),
    )
}

fn token_counts(response: &Value) -> (Option<u64>, Option<u64>) {
    let usage = response.get("usage");
    let prompt = usage
        .and_then(|u| u.get("prompt_tokens"))
        .and_then(Value::as_u64)
        .or_else(|| prompt_token_ids(response).map(|ids| ids.len() as u64));
    let completion = usage
        .and_then(|u| u.get("completion_tokens"))
        .and_then(Value::as_u64)
        .or_else(|| {
            response_token_ids(response).map(|all| all.iter().map(|ids| ids.len() as u64).sum())
        });
    (prompt, completion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(stream: bool, status: Option<u16>, chunks: &[&str]) -> CallRecord {
        let now = Instant::now();
        CallRecord {
            endpoint: Endpoint::Chat,
            stream,
            tracking: None,
            path: "/v1/chat/completions".into(),
            request: json!({}),
            started_wall: SystemTime::now(),
            started: now,
            sent: now,
            status,
            chunks: chunks
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        now + Duration::from_millis(10 * (i as u64 + 1)),
                        Bytes::from(c.to_string()),
                    )
                })
                .collect(),
            truncated: false,
            ended: now + Duration::from_secs(1),
            outcome: Outcome::Completed,
        }
    }

    #[test]
    fn paths_name_their_endpoint() {
        assert_eq!(
            Endpoint::from_path("/v1/chat/completions"),
            Some(Endpoint::Chat)
        );
        assert_eq!(
            Endpoint::from_path("/v1/completions"),
            Some(Endpoint::Completions)
        );
        assert_eq!(Endpoint::from_path("/v1/models"), None);
    }

    #[test]
    fn a_non_streaming_body_split_in_chunks_is_parsed_whole() {
        let parsed = record(
            false,
            Some(200),
            &[
                r#"{"id":"x","choices":[{"index":0,"token_ids":[7,8,9]}],"#,
                r#""prompt_token_ids":[1,2]}"#,
            ],
        )
        .parse();
        assert_eq!(parsed.outcome, "ok");
        assert!(parsed.error.is_none());
        assert_eq!(parsed.prompt_tokens, Some(2));
        assert_eq!(parsed.completion_tokens, Some(3));
    }

    #[test]
    fn streams_measure_the_first_token() {
        let parsed = record(
            true,
            Some(200),
            &[
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"prompt_token_ids\":[1]}\n\n",
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"token_ids\":[5]}]}\n\n",
                "data: [DONE]\n\n",
            ],
        )
        .parse();
        assert_eq!(parsed.ttft, Some(Duration::from_millis(20)));
        assert_eq!(parsed.completion_tokens, Some(1));
        assert_eq!(
            parsed.response.unwrap()["choices"][0]["message"]["content"],
            "a"
        );
    }

    #[test]
    fn errors_are_named() {
        let parsed = record(
            false,
            Some(400),
            &[r#"{"error":{"message":"bad things","code":400}}"#],
        )
        .parse();
        assert_eq!(parsed.outcome, "upstream_error");
        assert_eq!(parsed.error.as_deref(), Some("bad things"));
        let mut gone = record(true, Some(200), &["data: {}\n\n"]);
        gone.outcome = Outcome::ClientDisconnected;
        assert_eq!(gone.parse().outcome, "client_disconnected");
    }

    #[test]
    fn legacy_response_token_ids_are_read() {
        let response = json!({"choices": [{"index": 0}], "response_token_ids": [[4, 5]], "prompt_token_ids": [1]});
        assert_eq!(
            response_token_ids(&response),
            Some(vec![vec![json!(4), json!(5)]])
        );
        let completion = json!({"choices": [{"prompt_token_ids": [3, 4], "token_ids": [9]}]});
        assert_eq!(prompt_token_ids(&completion).map(Vec::len), Some(2));
        assert_eq!(response_token_ids(&json!({"choices": []})), None);
    }
}
