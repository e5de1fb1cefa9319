//! The CloudEvents 1.0 envelope (structured JSON mode) with Troupe's extensions.
//!
//! On queues an event travels as one JSON object: the context attributes, `data` as
//! JSON when the content type is JSON (else `data_base64`), and the extensions
//! `tenant`, `session` and `traceparent` as top-level attributes.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// A CloudEvents 1.0 event plus Troupe's extension attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// UUIDv7; also the dedupe key.
    pub id: String,
    /// Producer, e.g. `/functions/extract`.
    pub source: String,
    /// Versioned type, e.g. `troupe.document.uploaded.v1`.
    pub ty: String,
    /// What it is about (the document id); also what subscription filters match.
    pub subject: Option<String>,
    /// RFC 3339 time of the occurrence.
    pub time: String,
    /// Media type of `data`.
    pub datacontenttype: Option<String>,
    /// Payload bytes.
    pub data: Vec<u8>,
    /// Extension: tenant.
    pub tenant: Option<String>,
    /// Extension: correlation key for fan-in.
    pub session: Option<String>,
    /// Extension: W3C trace context.
    pub traceparent: Option<String>,
}

/// A fresh UUIDv7 event id (time-ordered).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Now, as an RFC 3339 string with millisecond precision.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Event {
    /// A new event with a fresh id and the current time; JSON data.
    pub fn new(source: impl Into<String>, ty: impl Into<String>, data: &serde_json::Value) -> Self {
        Self {
            id: new_id(),
            source: source.into(),
            ty: ty.into(),
            subject: None,
            time: now_rfc3339(),
            datacontenttype: Some("application/json".into()),
            data: serde_json::to_vec(data).unwrap_or_default(),
            tenant: None,
            session: None,
            traceparent: None,
        }
    }

    /// Sets the subject.
    #[must_use]
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Structured-mode JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing owned strings and a `serde_json::Value` cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses structured-mode JSON, naming what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            what: "CloudEvent".into(),
            why: e.to_string(),
        })
    }

    fn is_json(&self) -> bool {
        self.datacontenttype.as_deref().is_none_or(|ct| {
            let ct = ct.split(';').next().unwrap_or("").trim();
            ct == "application/json" || ct.ends_with("+json") || ct == "text/json"
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let (data, data_base64) = if self.data.is_empty() {
            (None, None)
        } else if self.is_json() {
            match serde_json::from_slice(&self.data) {
                Ok(value) => (Some(value), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(&self.data)),
                ),
            }
        } else {
            (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&self.data)),
            )
        };
        Wire {
            specversion: "1.0".into(),
            id: self.id.clone(),
            source: self.source.clone(),
            ty: self.ty.clone(),
            subject: self.subject.clone(),
            time: Some(self.time.clone()),
            datacontenttype: self.datacontenttype.clone(),
            data,
            data_base64,
            tenant: self.tenant.clone(),
            session: self.session.clone(),
            traceparent: self.traceparent.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let w = Wire::deserialize(d)?;
        if w.specversion != "1.0" {
            return Err(D::Error::custom(format!(
                "unsupported specversion `{}` (expected `1.0`)",
                w.specversion
            )));
        }
        if w.id.is_empty() {
            return Err(D::Error::custom("attribute `id` is empty"));
        }
        let data = match (w.data, w.data_base64) {
            (Some(_), Some(_)) => {
                return Err(D::Error::custom("both `data` and `data_base64` are set"));
            }
            (Some(serde_json::Value::String(s)), None)
                if w.datacontenttype
                    .as_deref()
                    .is_some_and(|ct| !ct.contains("json")) =>
            {
                s.into_bytes()
            }
            (Some(v), None) => serde_json::to_vec(&v).map_err(D::Error::custom)?,
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| D::Error::custom(format!("`data_base64`: {e}")))?,
            (None, None) => Vec::new(),
        };
        Ok(Self {
            id: w.id,
            source: w.source,
            ty: w.ty,
            subject: w.subject,
            time: w.time.unwrap_or_default(),
            datacontenttype: w.datacontenttype,
            data,
            tenant: w.tenant,
            session: w.session,
            traceparent: w.traceparent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_data_round_trips_as_json() {
        let mut e = Event::new("/test", "troupe.test.v1", &serde_json::json!({"a": 1}));
        e.tenant = Some("acme".into());
        e.session = Some("doc-1".into());
        let wire: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(wire["specversion"], "1.0");
        assert_eq!(wire["data"]["a"], 1);
        assert_eq!(wire["tenant"], "acme");
        assert!(wire.get("data_base64").is_none());
        assert_eq!(Event::from_json(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn binary_data_round_trips_as_base64() {
        let mut e = Event::new("/test", "troupe.test.v1", &serde_json::Value::Null);
        e.datacontenttype = Some("application/octet-stream".into());
        e.data = vec![0, 159, 146, 150];
        let wire: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert!(wire["data_base64"].is_string());
        assert_eq!(Event::from_json(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn bad_envelopes_say_what_is_wrong() {
        let err = Event::from_json(br#"{"specversion":"0.3","id":"1","source":"s","type":"t"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("specversion"), "{err}");
        let err = Event::from_json(br#"{"specversion":"1.0","source":"s","type":"t"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("id"), "{err}");
    }
}
