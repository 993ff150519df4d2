//! Reading what vLLM streams back: server-sent events, and the complete response they add
//! up to.
//!
//! The proxy hands the client every byte as it arrives; a copy of the chunks is parsed
//! here afterwards, off the request path. [`EventParser`] splits the bytes into events
//! (`data:` lines up to a blank line; LF, CRLF or CR line ends; comments and keep-alives
//! ignored), and [`Accumulator`] folds the chunks of a chat or text completion into the
//! response a non-streaming call would have returned: per choice the content, reasoning,
//! tool calls (arguments concatenated by tool index), token ids (also from chunks whose
//! content is empty, as vLLM sends for tokens a tool parser swallowed), logprobs, finish
//! and stop reasons; once per call the prompt token ids of the first chunk, the usage of
//! the last, and the id, model and creation time.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// Incremental splitter of an SSE byte stream into the `data` of each event.
#[derive(Debug, Default)]
pub struct EventParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The previous byte was a CR, so an LF right after it ends nothing more.
    after_cr: bool,
}

impl EventParser {
    /// Feeds `bytes`; every event completed by them is handed to `on_event`.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(&str)) {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line(&mut on_event);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
    }

    /// Ends the stream: an event not closed by a blank line still counts.
    pub fn finish(&mut self, mut on_event: impl FnMut(&str)) {
        if !self.line.is_empty() {
            self.end_line(&mut on_event);
        }
        self.dispatch(&mut on_event);
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(&str)) {
        if self.line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        let line = std::mem::take(&mut self.line);
        if line.first() == Some(&b':') {
            return; // a comment, e.g. a keep-alive
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &[][..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(&str)) {
        if self.has_data {
            let data = std::mem::take(&mut self.data);
            self.has_data = false;
            on_event(&String::from_utf8_lossy(&data));
        }
    }
}

/// A tool call being assembled from deltas.
#[derive(Debug, Default)]
struct ToolCall {
    id: Option<Value>,
    kind: Option<Value>,
    name: String,
    arguments: String,
}

/// One choice being assembled.
#[derive(Debug, Default)]
struct Choice {
    role: Option<String>,
    content: Option<String>,
    /// Reasoning text under the key vLLM used (`reasoning_content` or `reasoning`).
    reasoning: BTreeMap<String, String>,
    tool_calls: BTreeMap<u64, ToolCall>,
    text: Option<String>,
    token_ids: Option<Vec<Value>>,
    prompt_token_ids: Option<Value>,
    chat_logprobs: Option<Vec<Value>>,
    completion_logprobs: Option<Map<String, Value>>,
    finish_reason: Value,
    stop_reason: Value,
}

/// What a stream adds up to.
#[derive(Debug, Default)]
pub struct Accumulator {
    id: Option<Value>,
    object: Option<String>,
    created: Option<Value>,
    model: Option<Value>,
    system_fingerprint: Option<Value>,
    prompt_token_ids: Option<Value>,
    usage: Option<Value>,
    choices: BTreeMap<u64, Choice>,
    error: Option<Value>,
    done: bool,
    events: usize,
    invalid: usize,
}

impl Accumulator {
    /// Folds one event's `data` in. Returns whether it carried generated tokens (for the
    /// time to first token).
    pub fn push(&mut self, data: &str) -> bool {
        self.events += 1;
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return false;
        }
        let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(data) else {
            self.invalid += 1;
            return false;
        };
        if let Some(error) = chunk.get("error") {
            self.error = Some(error.clone());
            return false;
        }
        if chunk.get("object").and_then(Value::as_str) == Some("error") {
            self.error = Some(Value::Object(chunk));
            return false;
        }
        let set_once = |slot: &mut Option<Value>, key: &str| {
            if slot.is_none()
                && let Some(v) = chunk.get(key).filter(|v| !v.is_null())
            {
                *slot = Some(v.clone());
            }
        };
        set_once(&mut self.id, "id");
        set_once(&mut self.created, "created");
        set_once(&mut self.model, "model");
        set_once(&mut self.system_fingerprint, "system_fingerprint");
        set_once(&mut self.prompt_token_ids, "prompt_token_ids");
        if self.object.is_none() {
            self.object = chunk
                .get("object")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage.clone());
        }
        let mut tokens = false;
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            tokens |= self.push_choice(choice);
        }
        tokens
    }

    fn push_choice(&mut self, choice: &Value) -> bool {
        let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
        let acc = self.choices.entry(index).or_default();
        let mut tokens = false;
        if let Some(ids) = choice.get("token_ids").and_then(Value::as_array) {
            tokens |= !ids.is_empty();
            acc.token_ids
                .get_or_insert_with(Vec::new)
                .extend(ids.iter().cloned());
        }
        if acc.prompt_token_ids.is_none()
            && let Some(ids) = choice.get("prompt_token_ids").filter(|v| !v.is_null())
        {
            acc.prompt_token_ids = Some(ids.clone());
        }
        if let Some(text) = choice.get("text").and_then(Value::as_str) {
            tokens |= !text.is_empty();
            acc.text.get_or_insert_with(String::new).push_str(text);
        }
        if let Some(delta) = choice.get("delta").and_then(Value::as_object) {
            tokens |= push_delta(acc, delta);
        }
        if let Some(Value::Object(lp)) = choice.get("logprobs") {
            push_logprobs(acc, lp);
        }
        for key in ["finish_reason", "stop_reason"] {
            if let Some(v) = choice.get(key).filter(|v| !v.is_null()) {
                let slot = if key == "finish_reason" {
                    &mut acc.finish_reason
                } else {
                    &mut acc.stop_reason
                };
                *slot = v.clone();
            }
        }
        tokens
    }

    /// Whether the stream ended with `data: [DONE]`.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The error event vLLM sent in the stream, if any.
    pub fn error(&self) -> Option<&Value> {
        self.error.as_ref()
    }

    /// Events seen, and how many of them were not JSON objects.
    pub fn counts(&self) -> (usize, usize) {
        (self.events, self.invalid)
    }

    /// The response a non-streaming call would have returned: `chat.completion` for chat
    /// chunks, `text_completion` for text completions.
    pub fn finish(self) -> Value {
        let chat = self
            .object
            .as_deref()
            .is_none_or(|o| o.starts_with("chat.completion"));
        let mut out = Map::new();
        out.insert("id".into(), self.id.unwrap_or(Value::Null));
        out.insert(
            "object".into(),
            Value::from(if chat {
                "chat.completion"
            } else {
                "text_completion"
            }),
        );
        out.insert("created".into(), self.created.unwrap_or(Value::Null));
        out.insert("model".into(), self.model.unwrap_or(Value::Null));
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, c)| finish_choice(index, c, chat))
            .collect();
        out.insert("choices".into(), Value::Array(choices));
        if let Some(fp) = self.system_fingerprint {
            out.insert("system_fingerprint".into(), fp);
        }
        out.insert("usage".into(), self.usage.unwrap_or(Value::Null));
        if let Some(ids) = self.prompt_token_ids {
            out.insert("prompt_token_ids".into(), ids);
        }
        Value::Object(out)
    }
}

fn push_delta(acc: &mut Choice, delta: &Map<String, Value>) -> bool {
    let mut tokens = false;
    if let Some(role) = delta.get("role").and_then(Value::as_str) {
        acc.role = Some(role.to_owned());
    }
    if let Some(content) = delta.get("content").and_then(Value::as_str) {
        tokens |= !content.is_empty();
        acc.content
            .get_or_insert_with(String::new)
            .push_str(content);
    }
    for key in ["reasoning_content", "reasoning"] {
        if let Some(text) = delta.get(key).and_then(Value::as_str) {
            tokens |= !text.is_empty();
            acc.reasoning
                .entry(key.to_owned())
                .or_default()
                .push_str(text);
        }
    }
    for call in delta
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        tokens = true;
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let tool = acc.tool_calls.entry(index).or_default();
        if let Some(id) = call.get("id").filter(|v| !v.is_null()) {
            tool.id = Some(id.clone());
        }
        if let Some(kind) = call.get("type").filter(|v| !v.is_null()) {
            tool.kind = Some(kind.clone());
        }
        if let Some(function) = call.get("function") {
            if let Some(name) = function.get("name").and_then(Value::as_str) {
                tool.name.push_str(name);
            }
            if let Some(args) = function.get("arguments").and_then(Value::as_str) {
                tool.arguments.push_str(args);
            }
        }
    }
    tokens
}

fn push_logprobs(acc: &mut Choice, lp: &Map<String, Value>) {
    if let Some(content) = lp.get("content").and_then(Value::as_array) {
        acc.chat_logprobs
            .get_or_insert_with(Vec::new)
            .extend(content.iter().cloned());
        return;
    }
    // Text completions: parallel arrays, concatenated key by key.
    let merged = acc.completion_logprobs.get_or_insert_with(Map::new);
    for (key, value) in lp {
        if let Value::Array(items) = value {
            match merged.entry(key.clone()).or_insert_with(|| json!([])) {
                Value::Array(existing) => existing.extend(items.iter().cloned()),
                other => *other = value.clone(),
            }
        }
    }
}

fn finish_choice(index: u64, c: Choice, chat: bool) -> Value {
    let mut out = Map::new();
    out.insert("index".into(), Value::from(index));
    if chat {
        let mut message = Map::new();
        message.insert(
            "role".into(),
            Value::from(c.role.unwrap_or_else(|| "assistant".to_owned())),
        );
        let tool_calls: Vec<Value> = c
            .tool_calls
            .into_values()
            .map(|t| {
                json!({
                    "id": t.id.unwrap_or(Value::Null),
                    "type": t.kind.unwrap_or_else(|| Value::from("function")),
                    "function": {"name": t.name, "arguments": t.arguments},
                })
            })
            .collect();
        // As vLLM does: no text next to tool calls is `null`, not "".
        let content = match c.content {
            Some(text) if !text.is_empty() || tool_calls.is_empty() => Value::from(text),
            _ => Value::Null,
        };
        message.insert("content".into(), content);
        for (key, text) in c.reasoning {
            message.insert(key, Value::from(text));
        }
        if !tool_calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(tool_calls));
        }
        out.insert("message".into(), Value::Object(message));
        out.insert(
            "logprobs".into(),
            c.chat_logprobs
                .map_or(Value::Null, |content| json!({ "content": content })),
        );
    } else {
        out.insert("text".into(), Value::from(c.text.unwrap_or_default()));
        out.insert(
            "logprobs".into(),
            c.completion_logprobs.map_or(Value::Null, Value::Object),
        );
    }
    out.insert("finish_reason".into(), c.finish_reason);
    out.insert("stop_reason".into(), c.stop_reason);
    if let Some(ids) = c.prompt_token_ids {
        out.insert("prompt_token_ids".into(), ids);
    }
    if let Some(ids) = c.token_ids {
        out.insert("token_ids".into(), Value::Array(ids));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = EventParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |e| out.push(e.to_owned()));
        }
        parser.finish(|e| out.push(e.to_owned()));
        out
    }

    #[test]
    fn events_split_on_blank_lines_whatever_the_line_ends() {
        assert_eq!(
            events(&[b"data: a\n\ndata: b\r\n\r\ndata: c\r\rdata:d"]),
            ["a", "b", "c", "d"]
        );
        // Split anywhere, CRLF across chunks included.
        assert_eq!(events(&[b"da", b"ta: x\r", b"\n", b"\r\n"]), ["x"]);
        // Comments, other fields and multi-line data.
        assert_eq!(
            events(&[b": keep-alive\n\nevent: m\nid: 1\ndata: l1\ndata: l2\n\n"]),
            ["l1\nl2"]
        );
        assert!(events(&[b"\n\n: ping\n\n"]).is_empty());
    }

    #[test]
    fn a_chat_stream_adds_up_to_the_full_response() {
        let chunks = [
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":[1,2,3]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"reasoning_content":"hm"},"logprobs":{"content":[{"token":"hm","logprob":-0.5}]},"finish_reason":null,"token_ids":[10]}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":{"content":[{"token":"Hel","logprob":-0.1}]},"finish_reason":null,"token_ids":[11]}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":null,"token_ids":[12]}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"logprobs":null,"finish_reason":"stop","stop_reason":null,"token_ids":[13]}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            "[DONE]",
        ];
        let mut acc = Accumulator::default();
        let token_events: Vec<bool> = chunks.iter().map(|c| acc.push(c)).collect();
        assert_eq!(
            token_events,
            [false, true, true, true, true, false, false],
            "a token id with empty content is a generated token too"
        );
        assert!(acc.done());
        let full = acc.finish();
        assert_eq!(
            full,
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello", "reasoning_content": "hm"},
                    "logprobs": {"content": [{"token": "hm", "logprob": -0.5}, {"token": "Hel", "logprob": -0.1}]},
                    "finish_reason": "stop", "stop_reason": null,
                    "token_ids": [10, 11, 12, 13],
                }],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
                "prompt_token_ids": [1, 2, 3],
            })
        );
    }

    #[test]
    fn tool_calls_are_assembled_by_index() {
        let mut acc = Accumulator::default();
        for chunk in [
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":""},"token_ids":[5]}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call-1","type":"function","function":{"name":"search"}}]},"token_ids":[6]}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\": "}}]},"token_ids":[7]}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":"tool_calls","token_ids":[8]}]}"#,
        ] {
            acc.push(chunk);
        }
        let full = acc.finish();
        let choice = &full["choices"][0];
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "call-1", "type": "function", "function": {"name": "search", "arguments": "{\"q\": 1}"}}])
        );
        assert_eq!(choice["token_ids"], json!([5, 6, 7, 8]));
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert!(!full.as_object().unwrap().contains_key("prompt_token_ids"));
    }

    #[test]
    fn text_completions_keep_per_choice_prompt_ids_and_logprobs() {
        let mut acc = Accumulator::default();
        for chunk in [
            r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":1,"text":"B","logprobs":{"tokens":["B"],"token_logprobs":[-1.0]},"finish_reason":null,"prompt_token_ids":[4,5],"token_ids":[20]}]}"#,
            r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"A","finish_reason":null,"prompt_token_ids":[4,5],"token_ids":[30]}]}"#,
            r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":1,"text":"b","logprobs":{"tokens":["b"],"token_logprobs":[-2.0]},"finish_reason":"length","token_ids":[21]}]}"#,
        ] {
            acc.push(chunk);
        }
        let full = acc.finish();
        assert_eq!(full["object"], "text_completion");
        assert_eq!(full["choices"][0]["text"], "A");
        assert_eq!(full["choices"][1]["text"], "Bb");
        assert_eq!(full["choices"][1]["token_ids"], json!([20, 21]));
        assert_eq!(full["choices"][1]["prompt_token_ids"], json!([4, 5]));
        assert_eq!(
            full["choices"][1]["logprobs"],
            json!({"tokens": ["B", "b"], "token_logprobs": [-1.0, -2.0]})
        );
        assert_eq!(full["choices"][1]["finish_reason"], "length");
    }

    #[test]
    fn errors_and_garbage_are_noted() {
        let mut acc = Accumulator::default();
        acc.push("not json");
        acc.push(r#"{"error":{"message":"boom","code":500}}"#);
        assert_eq!(acc.counts(), (2, 1));
        assert_eq!(acc.error().unwrap()["message"], "boom");
        assert!(!acc.done());
    }
}
