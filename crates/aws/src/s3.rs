//! Object storage on S3. Troupe uses one bucket; every bucket name the manifest and
//! the functions use (`documents`) is an alias of it, so the same `spin.toml` runs on
//! the embedded default and on S3.

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use troupe_core::{Blobs, Result};

use crate::sdk_error;

/// [`Blobs`] on one S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Blobs {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Blobs {
    /// Blobs in `bucket` (which must exist: `troupe init --backend aws` creates it).
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            s3,
            bucket: bucket.into(),
        }
    }

    /// The real bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn check(&self, logical: &str, key: &str) -> Result<()> {
        troupe_core::blobs::check_bucket(logical)?;
        if key.is_empty() || key.len() > 1024 {
            return Err(troupe_core::Error::invalid(
                "key",
                format!("object keys are 1-1024 bytes; got {} bytes", key.len()),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Blobs for S3Blobs {
    #[tracing::instrument(skip_all, name = "aws.s3", fields(otel.name = "S3.GetObject", otel.kind = "client", rpc.system = "aws-api", rpc.service = "S3", rpc.method = "GetObject", aws.s3.bucket = %bucket, aws.s3.key = %key))]
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.check(bucket, key)?;
        let out = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchKey") => return Ok(None),
            Err(e) => return Err(sdk_error("s3", e)),
        };
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| troupe_core::Error::backend("s3", e))?;
        Ok(Some(data.into_bytes().to_vec()))
    }

    #[tracing::instrument(skip_all, name = "aws.s3", fields(otel.name = "S3.PutObject", otel.kind = "client", rpc.system = "aws-api", rpc.service = "S3", rpc.method = "PutObject", aws.s3.bucket = %bucket, aws.s3.key = %key))]

    async fn put(&self, bucket: &str, key: &str, data: &[u8]) -> Result<()> {
        self.check(bucket, key)?;
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error("s3", e))?;
        Ok(())
    }

    #[tracing::instrument(skip_all, name = "aws.s3", fields(otel.name = "S3.DeleteObject", otel.kind = "client", rpc.system = "aws-api", rpc.service = "S3", rpc.method = "DeleteObject", aws.s3.bucket = %bucket, aws.s3.key = %key))]

    async fn delete(&self, bucket: &str, key: &str) -> Result<bool> {
        self.check(bucket, key)?;
        // S3's DeleteObject does not say whether the object was there.
        let existed = match self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => false,
            Err(e) => return Err(sdk_error("s3", e)),
        };
        if existed {
            self.s3
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| sdk_error("s3", e))?;
        }
        Ok(existed)
    }

    #[tracing::instrument(skip_all, name = "aws.s3", fields(otel.name = "S3.ListObjectsV2", otel.kind = "client", rpc.system = "aws-api", rpc.service = "S3", rpc.method = "ListObjectsV2", aws.s3.bucket = %bucket))]

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        troupe_core::blobs::check_bucket(bucket)?;
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("s3", e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        Ok(keys)
    }

    async fn health(&self) -> Result<()> {
        self.s3
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| sdk_error("s3", e))?;
        Ok(())
    }
}
