//! A Server-Sent Events client for tests: opens a stream on a thread of its own and
//! hands over its frames as they arrive; dropping it closes the connection.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One frame: its `id`, `event` and `data` fields (empty when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `id:`.
    pub id: String,
    /// `event:` (`message` when absent).
    pub event: String,
    /// `data:` lines joined by `\n`.
    pub data: String,
}

impl Frame {
    /// `data` as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_default()
    }
}

/// An open stream.
#[derive(Debug)]
pub struct Stream {
    frames: mpsc::Receiver<Frame>,
    ended: mpsc::Receiver<()>,
}

/// Why a stream did not open: the status and body of the answer.
#[derive(Debug)]
pub struct Refused {
    /// The status code.
    pub status: u16,
    /// `Retry-After`, when sent.
    pub retry_after: Option<String>,
    /// The body.
    pub body: String,
}

impl Stream {
    /// `GET url` with `Accept: text/event-stream` and `headers`.
    pub fn open(url: &str, headers: &[(&str, &str)]) -> Result<Self, Refused> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.get(url).header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        if resp.status() != 200 {
            return Err(Refused {
                status: resp.status().as_u16(),
                retry_after: resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: resp.body_mut().read_to_string().unwrap_or_default(),
            });
        }
        let (tx, frames) = mpsc::channel();
        let (done, ended) = mpsc::channel();
        std::thread::spawn(move || {
            let reader = BufReader::new(resp.into_body().into_reader());
            let mut frame = Frame {
                id: String::new(),
                event: String::new(),
                data: String::new(),
            };
            let mut data: Vec<String> = Vec::new();
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if line.is_empty() {
                    if !frame.event.is_empty() || !data.is_empty() {
                        frame.data = data.join("\n");
                        if frame.event.is_empty() {
                            frame.event = "message".into();
                        }
                        if tx.send(frame.clone()).is_err() {
                            break; // the test dropped the stream
                        }
                    }
                    frame = Frame {
                        id: String::new(),
                        event: String::new(),
                        data: String::new(),
                    };
                    data.clear();
                    continue;
                }
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((&line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                match field {
                    "id" => frame.id = value,
                    "event" => frame.event = value,
                    "data" => data.push(value),
                    _ => {}
                }
            }
            let _ = done.send(());
        });
        Ok(Self { frames, ended })
    }

    /// The next frame, if one arrives within `within`.
    pub fn next(&self, within: Duration) -> Option<Frame> {
        self.frames.recv_timeout(within).ok()
    }

    /// The next `n` frames; panics naming what arrived when they do not come in `within`.
    pub fn take(&self, n: usize, within: Duration) -> Vec<Frame> {
        let until = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n {
            let left = until.saturating_duration_since(Instant::now());
            match self.frames.recv_timeout(left) {
                Ok(f) => got.push(f),
                Err(_) => panic!("{} of {n} frames within {within:?}: {got:#?}", got.len()),
            }
        }
        got
    }

    /// Whether the server ended the stream within `within` (frames still unread stay
    /// readable).
    pub fn ended(&self, within: Duration) -> bool {
        self.ended.recv_timeout(within).is_ok()
    }
}
