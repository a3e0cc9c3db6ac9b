//! Storage targets for outputs (HLS segments and playlists, recordings): a local
//! directory, S3 or Google Cloud Storage, written by a dedicated uploader thread that no
//! shard ever waits for. Shards hand jobs over a bounded queue (`Uploader::submit` never
//! blocks); see `uploader.rs` for the ordering, retry and drop rules.

pub mod gcs;
pub mod http;
pub mod s3;
pub mod target;
pub mod uploader;

use std::path::PathBuf;
use std::time::Duration;

pub use target::Target;
pub use uploader::{Job, Op, Store, Uploader, UploaderConfig};

use std::sync::Arc;

use bytes::Bytes;

use crate::shard::hooks::ObjectStore;

/// An object's bytes as the uploader sends them.
pub enum Content {
    Memory(Bytes),
    /// A file and its length, read while it is sent.
    File(std::fs::File, u64),
}

/// One target written through the uploader: what features get as their `ObjectStore`.
pub struct UploadTarget {
    pub uploader: Arc<Uploader>,
    pub store: Arc<Store>,
}

impl ObjectStore for UploadTarget {
    fn put(
        &self,
        order: &str,
        name: String,
        body: Vec<Bytes>,
        content_type: &'static str,
        cache_control: &'static str,
    ) {
        self.uploader.submit(Job {
            store: self.store.clone(),
            name,
            op: Op::Put {
                body,
                content_type,
                cache_control,
            },
            order: order.to_string(),
        });
    }

    fn put_file(
        &self,
        order: &str,
        name: String,
        path: std::path::PathBuf,
        content_type: &'static str,
        then_remove: Vec<std::path::PathBuf>,
    ) {
        self.uploader.submit(Job {
            store: self.store.clone(),
            name,
            op: Op::PutFile {
                path,
                content_type,
                cache_control: "public, max-age=86400",
                then_remove,
            },
            order: order.to_string(),
        });
    }

    fn delete(&self, order: &str, name: String) {
        self.uploader.submit(Job {
            store: self.store.clone(),
            name,
            op: Op::Delete,
            order: order.to_string(),
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage URL {url}: {why}")]
    Url { url: String, why: String },
    #[error("{0}")]
    Connect(String),
    #[error("http: {0}")]
    Http(String),
    #[error("building the request: {0}")]
    Request(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The target answered with an error status.
    #[error("status {status}: {body}")]
    Status { status: u16, body: String },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the uploader thread: {0}")]
    Thread(std::io::Error),
}

impl StorageError {
    fn http(e: hyper::Error) -> Self {
        StorageError::Http(e.to_string())
    }

    /// Whether trying again cannot help: the target refused the request itself (bad
    /// credentials, no such bucket), as opposed to being down or slow.
    pub fn is_permanent(&self) -> bool {
        match self {
            StorageError::Status { status, .. } => {
                (400..500).contains(status) && !matches!(status, 408 | 429)
            }
            StorageError::Url { .. } | StorageError::Request(_) => true,
            // A local file that is gone, or a directory we may not write, will not change.
            StorageError::File { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::ReadOnlyFilesystem
            ),
            _ => false,
        }
    }

    /// A short label for the `result` of the uploads counter.
    pub fn result(&self) -> &'static str {
        match self {
            StorageError::Status {
                status: 401 | 403, ..
            } => "denied",
            e if e.is_permanent() => "refused",
            _ => "error",
        }
    }
}

/// URI encoding as S3 and GCS want it: everything but `A-Za-z0-9-._~` (and `/` in a path) as `%XX`.
pub(crate) fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
