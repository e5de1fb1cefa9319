//! Object storage, and the S3-shaped record a write under a watched prefix emits.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Buckets of keyed objects.
#[async_trait]
pub trait Blobs: Send + Sync {
    /// Reads an object; `None` when absent.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>>;
    /// Writes an object, replacing any previous one; readers never see half of it.
    async fn put(&self, bucket: &str, key: &str, data: &[u8]) -> Result<()>;
    /// Deletes an object; true if it existed.
    async fn delete(&self, bucket: &str, key: &str) -> Result<bool>;
    /// Keys under `prefix`, in order.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>>;
    /// Whether the store answers.
    async fn health(&self) -> Result<()>;
}

/// Checks a bucket name: 3–63 of `a-z 0-9 . -`, starting and ending alphanumeric.
pub fn check_bucket(bucket: &str) -> Result<()> {
    let b = bucket.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(crate::Error::invalid(
            "bucket",
            format!(
                "`{bucket}`: use 3-63 characters of a-z, 0-9, '.', '-', starting and ending with a letter or digit"
            ),
        ))
    }
}

/// Topic on which object-created notifications for `bucket` are published; a blob
/// trigger subscribes to it with the key prefix as its subject filter.
pub fn created_topic(bucket: &str) -> String {
    format!("troupe.blob.created/{bucket}")
}

/// CloudEvents type of an object-created notification.
pub const OBJECT_CREATED_TYPE: &str = "troupe.blob.created.v1";

/// The data of an object-created notification: the fields of an S3 event record that
/// functions read, so the same code handles local and S3 notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCreated {
    /// Always `2.1`.
    pub event_version: String,
    /// `troupe:local` or `aws:s3`.
    pub event_source: String,
    /// RFC 3339 time of the write.
    pub event_time: String,
    /// `ObjectCreated:Put`.
    pub event_name: String,
    /// Bucket and object.
    pub s3: S3Entity,
}

/// The `s3` member of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Entity {
    /// The bucket.
    pub bucket: S3Bucket,
    /// The object.
    pub object: S3Object,
}

/// The bucket of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Bucket {
    /// Bucket name.
    pub name: String,
}

/// The object of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Object {
    /// Object key (not URL-encoded here).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256 of the content (S3 gives an MD5 ETag; ours is stronger).
    pub e_tag: String,
}
