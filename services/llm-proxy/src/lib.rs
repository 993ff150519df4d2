//! The token-capturing LLM proxy engine, one implementation for every proxy of agl: the
//! `agl-vllm` launcher and sidecar (0.3 protocol: calls become spans in the store) and, to
//! come, the store's own v1 proxy routes (calls become `model_request` events).
//!
//! * [`rewrite`]: what a generation request gets on its way (token ids, logprobs, a usage
//!   chunk on streams);
//! * [`relay`]: forwarding headers, and the [`relay::Tee`] that hands the response to the
//!   agent byte for byte while keeping a copy for the record;
//! * [`call`], [`sse`]: a call as the tee kept it, and streams added up to the complete
//!   response (token ids included);
//! * [`pause`]: pausing new calls while those in flight drain (weight syncs), and counting
//!   them;
//! * [`net`]: listening sockets; `double` (feature `double`): a test double of vLLM's
//!   OpenAI server for the tests and benchmarks of every proxy.

pub mod call;
#[cfg(feature = "double")]
pub mod double;
pub mod net;
pub mod pause;
pub mod relay;
pub mod rewrite;
pub mod sse;
