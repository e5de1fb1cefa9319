//! `troupe:pipeline/blobs`: objects under the buckets and key prefixes the component
//! was granted, of the invocation's tenant.

use troupe_core::Blobs;
use wasmtime::component::{HasData, Linker};

use super::{Caller, Guest, reply};
use crate::bindings::{GuestError, blobs};
use crate::manifest::Grants;
use crate::store::Ctx;

/// A component's object storage: the backend, if it was granted any bucket, and its
/// grants.
pub struct BlobsView<'a> {
    /// Who calls.
    pub caller: Caller<'a>,
    /// The backend; `None` without any `blobs` grant.
    pub blobs: Option<&'a dyn Blobs>,
    /// Its grants.
    pub grants: &'a Grants,
}

struct HasBlobs;

impl HasData for HasBlobs {
    type Data<'a> = BlobsView<'a>;
}

pub(super) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    blobs::add_to_linker::<Ctx, HasBlobs>(linker, |ctx| {
        let env = &*ctx.env;
        BlobsView {
            caller: ctx.caller(),
            blobs: env.granted.blobs.as_deref(),
            grants: &env.granted.grants,
        }
    })
}

impl<'a> BlobsView<'a> {
    /// The backend when `key` of `bucket` is granted.
    /// The backend when `key` of `bucket` is granted and the invocation's tenant's
    /// (or, for reading and removing, announced the invocation: `announced`).
    fn object(
        &self,
        bucket: &str,
        key: &str,
        announced: bool,
    ) -> Result<&'a dyn Blobs, GuestError> {
        let b = self
            .blobs
            .filter(|_| self.grants.blob(bucket, key))
            .ok_or_else(|| self.refuse(bucket, key))?;
        let binding = self.caller.binding;
        let own = binding.tenant.owns_key(key) || (announced && binding.announced(bucket, key));
        if !own {
            return Err(self.caller.foreign(
                format!("object `{key}` of bucket `{bucket}`"),
                &format!("object keys are `<kind>/{}/<name>`", binding.tenant),
            ));
        }
        Ok(b)
    }

    fn refuse(&self, bucket: &str, key: &str) -> GuestError {
        self.caller.denied(
            format!("object `{key}` of bucket `{bucket}`"),
            format!("\"{bucket}/<prefix of the key>\" to `blobs`"),
        )
    }
}

impl blobs::Host for BlobsView<'_> {
    async fn get(&mut self, bucket: String, key: String) -> Guest<Option<Vec<u8>>> {
        match self.object(&bucket, &key, true) {
            Ok(b) => reply(b.get(&bucket, &key).await),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn put(&mut self, bucket: String, key: String, data: Vec<u8>) -> Guest<()> {
        match self.object(&bucket, &key, false) {
            Ok(b) => reply(b.put(&bucket, &key, &data).await),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn delete(&mut self, bucket: String, key: String) -> Guest<bool> {
        match self.object(&bucket, &key, true) {
            Ok(b) => reply(b.delete(&bucket, &key).await),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Lists only granted keys: a prefix wider than the grants is narrowed to them.
    async fn list_objects(&mut self, bucket: String, prefix: String) -> Guest<Vec<String>> {
        let Some(b) = self
            .blobs
            .filter(|_| self.grants.blob_listing(&bucket, &prefix))
        else {
            return Ok(Err(self.refuse(&bucket, &prefix)));
        };
        let tenant = self.caller.tenant();
        if !tenant.owns_prefix(&prefix) {
            return Ok(Err(self.caller.foreign(
                format!("objects under `{prefix}` of bucket `{bucket}`"),
                &format!("list a prefix `<kind>/{tenant}/…`"),
            )));
        }
        let grants = self.grants;
        reply(b.list(&bucket, &prefix).await.map(|keys| {
            keys.into_iter()
                .filter(|k| grants.blob(&bucket, k) && tenant.owns_key(k))
                .collect()
        }))
    }
}
