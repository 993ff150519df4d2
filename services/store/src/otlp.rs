//! TEMPORARY stub until the OTLP decoder lands.
pub struct DecodedSpan {
    pub rollout_id: String,
    pub attempt_id: String,
    pub sequence_id: Option<i64>,
    pub span: serde_json::Map<String, serde_json::Value>,
}
pub struct DecodedTraces {
    pub spans: Vec<DecodedSpan>,
    pub dropped: usize,
}
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("x")]
    Parse(String),
}
pub fn decode_traces(
    _: Option<&str>,
    _: Option<&str>,
    _: &[u8],
) -> Result<DecodedTraces, OtlpError> {
    Err(OtlpError::Parse(String::new()))
}
pub fn status_body(_: &str) -> Vec<u8> {
    Vec::new()
}
pub fn success_body(_: Option<&str>) -> (Vec<u8>, Option<&'static str>) {
    (Vec::new(), None)
}
