//! S3 `ObjectCreated` notifications, as SQS delivers them, turned into Troupe's
//! object-created CloudEvents: the same event the embedded backend publishes, so a
//! `blob` trigger's function cannot tell the two apart.
//!
//! Records are decoded with `aws_lambda_events`' `S3Event`, tolerating the optional
//! members some senders leave out (`userIdentity`, `requestParameters`); object keys
//! arrive form-URL-encoded (`+` for a space, `%2F` for `/`) and are decoded. The
//! `s3:TestEvent` S3 sends when notifications are configured is recognised and skipped.

use aws_lambda_events::event::s3::S3Event;
use percent_encoding::percent_decode_str;
use serde_json::Value;
use troupe_core::blobs::{OBJECT_CREATED_TYPE, ObjectCreated, S3Bucket, S3Entity, S3Object};
use troupe_core::{Error, Event, Result};

/// What an SQS message body from S3 holds.
#[derive(Debug)]
pub enum Notification {
    /// `s3:TestEvent`: nothing to do.
    Test,
    /// Object-created events, one per record, keyed by `bucket` as the manifest names it.
    Created(Vec<Event>),
    /// Not an S3 notification.
    Other,
}

/// Decodes an SQS message body sent by S3. `logical_bucket` replaces the real bucket
/// name in the events (the manifest's name for it). Records of other event kinds
/// (removals) are left out.
pub fn decode(body: &[u8], logical_bucket: &str) -> Result<Notification> {
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return Ok(Notification::Other);
    };
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notification::Test);
    }
    let Some(records) = value.get_mut("Records").and_then(Value::as_array_mut) else {
        return Ok(Notification::Other);
    };
    if !records
        .iter()
        .any(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:s3"))
    {
        return Ok(Notification::Other);
    }
    // Members S3Event requires but that some senders omit.
    for r in records.iter_mut() {
        if let Some(r) = r.as_object_mut() {
            for member in ["userIdentity", "requestParameters"] {
                r.entry(member)
                    .or_insert_with(|| Value::Object(Default::default()));
            }
        }
    }
    let event: S3Event = serde_json::from_value(value)
        .map_err(|e| Error::invalid("S3 notification", format!("not an S3 event record: {e}")))?;
    let mut out = Vec::with_capacity(event.records.len());
    for r in event.records {
        let name = r.event_name.unwrap_or_default();
        if !name.starts_with("ObjectCreated:") {
            continue;
        }
        let key =
            r.s3.object.key.as_deref().ok_or_else(|| {
                Error::invalid("S3 notification", "a record has no s3.object.key")
            })?;
        let key = decode_key(key)?;
        let real_bucket = r.s3.bucket.name.unwrap_or_default();
        let etag = r.s3.object.e_tag.unwrap_or_default();
        // The object's version, else its content: a notification repeated for the same
        // write (a multipart upload may yield two) carries the same id.
        let version =
            r.s3.object
                .version_id
                .filter(|v| !v.is_empty())
                .or_else(|| Some(etag.clone()).filter(|e| !e.is_empty()))
                .or(r.s3.object.sequencer)
                .unwrap_or_default();
        let time = r
            .event_time
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let record = ObjectCreated {
            event_version: r.event_version.unwrap_or_else(|| "2.1".into()),
            event_source: "aws:s3".into(),
            event_time: time.clone(),
            event_name: name,
            s3: S3Entity {
                bucket: S3Bucket {
                    name: logical_bucket.to_owned(),
                },
                object: S3Object {
                    key: key.clone(),
                    size: r
                        .s3
                        .object
                        .size
                        .map_or(0, |s| u64::try_from(s).unwrap_or(0)),
                    e_tag: etag,
                },
            },
        };
        let data = serde_json::to_value(&record)
            .map_err(|e| Error::invalid("S3 notification", e.to_string()))?;
        let mut ev = Event::new(
            format!("/blobs/{logical_bucket}"),
            OBJECT_CREATED_TYPE,
            &data,
        )
        .with_subject(&key);
        // A repeated notification is absorbed by the dedupe window like any repeated
        // event.
        ev.id = format!("s3:{real_bucket}/{key}@{version}");
        ev.time = time;
        out.push(ev);
    }
    Ok(Notification::Created(out))
}

/// An S3 event key, form-URL-decoded: `+` is a space, `%XX` a byte.
pub fn decode_key(key: &str) -> Result<String> {
    let spaced = key.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|e| {
            Error::invalid(
                "S3 notification",
                format!("object key `{key}` is not UTF-8 once decoded: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, extra: &str) -> String {
        format!(
            r#"{{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
            "eventTime":"2026-11-23T10:00:00.000Z","eventName":"ObjectCreated:Put"{extra},
            "s3":{{"s3SchemaVersion":"1.0","bucket":{{"name":"real-bucket","arn":"arn:aws:s3:::real-bucket"}},
            "object":{{"key":"{key}","size":12,"eTag":"abc","sequencer":"0055"}}}}}}"#
        )
    }

    #[test]
    fn moto_records_without_optional_members_decode() {
        let body = format!(
            r#"{{"Records":[{}]}}"#,
            record("uploads/a+b%2Fc%C3%A9.txt", "")
        );
        let Notification::Created(events) = decode(body.as_bytes(), "documents").unwrap() else {
            panic!("not decoded as created");
        };
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.subject.as_deref(), Some("uploads/a b/cé.txt"));
        assert_eq!(e.ty, OBJECT_CREATED_TYPE);
        assert_eq!(e.id, "s3:real-bucket/uploads/a b/cé.txt@abc");
        let data: ObjectCreated = serde_json::from_slice(&e.data).unwrap();
        assert_eq!(data.s3.bucket.name, "documents");
        assert_eq!(data.s3.object.size, 12);
    }

    #[test]
    fn aws_records_with_every_member_decode() {
        let extra = r#","userIdentity":{"principalId":"AWS:X"},"requestParameters":{"sourceIPAddress":"1.2.3.4"},"responseElements":{"x-amz-request-id":"r"}"#;
        let body = format!(
            r#"{{"Records":[{},{}]}}"#,
            record("uploads/x.pdf", extra),
            record("uploads/y.pdf", extra)
        );
        let Notification::Created(events) = decode(body.as_bytes(), "documents").unwrap() else {
            panic!("not decoded");
        };
        let keys: Vec<_> = events.iter().map(|e| e.subject.clone().unwrap()).collect();
        assert_eq!(keys, ["uploads/x.pdf", "uploads/y.pdf"]);
    }

    #[test]
    fn test_events_and_foreign_bodies_are_told_apart() {
        let test = br#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-23T10:00:00Z","Bucket":"b","RequestId":"r","HostId":"h"}"#;
        assert!(matches!(
            decode(test, "documents").unwrap(),
            Notification::Test
        ));
        assert!(matches!(
            decode(b"not json", "documents").unwrap(),
            Notification::Other
        ));
        assert!(matches!(
            decode(br#"{"specversion":"1.0"}"#, "documents").unwrap(),
            Notification::Other
        ));
    }

    #[test]
    fn removals_are_skipped_and_bad_records_are_errors() {
        let body = format!(
            r#"{{"Records":[{}]}}"#,
            record("uploads/x", "").replace("ObjectCreated:Put", "ObjectRemoved:Delete")
        );
        let Notification::Created(events) = decode(body.as_bytes(), "documents").unwrap() else {
            panic!()
        };
        assert!(events.is_empty());
        let bad = br#"{"Records":[{"eventSource":"aws:s3","eventTime":"yesterday"}]}"#;
        let err = decode(bad, "documents").unwrap_err().to_string();
        assert!(err.contains("S3 notification"), "{err}");
    }

    #[test]
    fn keys_that_do_not_decode_to_utf8_are_refused() {
        assert_eq!(decode_key("a%20b+c").unwrap(), "a b c");
        assert!(decode_key("bad%FF").is_err());
    }
}
