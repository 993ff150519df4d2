//! agl-vllm end to end, without a GPU: the test double of vLLM's OpenAI server
//! (`agl_vllm::double`) as the upstream URL and, through a script named `vllm`, as the
//! executable on PATH; a real agl-store in-process; real HTTP on loopback port 0.

mod auth;
mod errors;
mod helpers;
mod launcher;
mod proxy;
