//! Usage and completeness observation of a `text/event-stream`: an
//! incremental SSE reader that looks only at the events that matter.

use http::StatusCode;
use serde::Deserialize;

use crate::provider::usage::UsageWire;
use crate::provider::{ErrorClass, Usage, classify_error};

use super::json::{WithUsage, contains};
use super::{SSE_EVENT_LIMIT, SSE_NAME_LIMIT};

/// An incremental SSE reader that keeps only what it needs: the current
/// line's unfinished tail, the current event's name and (bounded) data.
/// A final event without its blank line is incomplete (the SSE spec
/// discards it), so the end of the stream dispatches nothing.
#[derive(Default)]
pub(super) struct SseTracker {
    line: Vec<u8>,
    name: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    pub(super) usage: Usage,
    pub(super) usage_seen: bool,
    pub(super) terminal: bool,
    pub(super) content_started: bool,
    pub(super) error: Option<ErrorClass>,
    pub(super) overflow: bool,
}

impl SseTracker {
    pub(super) fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !self.overflow {
            let Some(i) = rest.iter().position(|&b| b == b'\n') else {
                if self.line.len().saturating_add(rest.len()) > SSE_EVENT_LIMIT {
                    self.overflow();
                } else {
                    self.line.extend_from_slice(rest);
                }
                return;
            };
            // The line bound holds however the line arrived: whole in this
            // chunk (read in place) or partly kept from earlier chunks.
            if self.line.len().saturating_add(i) > SSE_EVENT_LIMIT {
                self.overflow();
                return;
            } else if self.line.is_empty() {
                self.line_done(&rest[..i]);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&rest[..i]);
                self.line_done(&line);
                line.clear();
                self.line = line;
            }
            rest = &rest[i + 1..];
        }
    }

    fn overflow(&mut self) {
        self.overflow = true;
        self.line = Vec::new();
        self.data = Vec::new();
    }

    fn line_done(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line[0] == b':' {
            return; // comment
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.name.clear();
                self.name
                    .extend_from_slice(&value[..value.len().min(SSE_NAME_LIMIT)]);
            }
            b"data" => {
                if self.data.len().saturating_add(value.len()) >= SSE_EVENT_LIMIT {
                    self.overflow();
                    return;
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let name = std::mem::take(&mut self.name);
        let data = std::mem::take(&mut self.data);
        let had_data = std::mem::replace(&mut self.has_data, false);
        if had_data {
            self.event(&name, &data);
        }
        // Reuse the allocations for the next event.
        self.name = name;
        self.name.clear();
        self.data = data;
        self.data.clear();
    }

    fn event(&mut self, name: &[u8], data: &[u8]) {
        match name {
            b"message_start" => {
                #[derive(Deserialize)]
                struct Start {
                    message: Option<WithUsage>,
                }
                if let Ok(Start { message: Some(m) }) = serde_json::from_slice(data) {
                    self.merge(m.usage);
                }
            }
            b"message_delta" => {
                if let Ok(m) = serde_json::from_slice::<WithUsage>(data) {
                    self.merge(m.usage);
                }
            }
            b"message_stop" => self.terminal = true,
            // A block start carries no text yet: only deltas are content.
            b"content_block_delta" | b"response.output_text.delta" => {
                self.content_started = true;
            }
            b"response.completed" => {
                #[derive(Deserialize)]
                struct Done {
                    response: Option<WithUsage>,
                }
                if let Ok(Done { response: Some(r) }) = serde_json::from_slice(data) {
                    self.merge(r.usage);
                }
                self.terminal = true;
            }
            b"error" | b"response.failed" => self.error(data),
            // OpenAI Chat Completions: unnamed events.
            b"" | b"message" => {
                if data == b"[DONE]" {
                    self.terminal = true;
                    return;
                }
                if !(contains(data, b"\"usage\"") || contains(data, b"\"error\"")) {
                    self.content_started |= contains(data, b"\"choices\"");
                    return;
                }
                #[derive(Deserialize)]
                struct Chunk {
                    usage: Option<UsageWire>,
                    error: Option<serde::de::IgnoredAny>,
                    #[serde(default)]
                    choices: Vec<serde::de::IgnoredAny>,
                }
                match serde_json::from_slice::<Chunk>(data) {
                    Ok(c) if c.error.is_some() => self.error(data),
                    Ok(c) => {
                        self.content_started |= !c.choices.is_empty();
                        self.merge(c.usage);
                    }
                    Err(_) => {}
                }
            }
            _ => {}
        }
    }

    fn merge(&mut self, usage: Option<UsageWire>) {
        if let Some(u) = usage {
            self.usage_seen |= u.merge_into(&mut self.usage);
        }
    }

    fn error(&mut self, data: &[u8]) {
        // An error event arrives inside an HTTP 200.
        self.error = Some(classify_error(StatusCode::OK, data));
    }
}
