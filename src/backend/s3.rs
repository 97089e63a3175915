//! A repository in an S3-compatible object store (Garage, MinIO, Ceph RGW,
//! AWS S3): `s3://BUCKET/PREFIX`.
//!
//! Objects mirror the local layout under the prefix (`config`, `keys/…`,
//! `data/ab/…`, `index/…`, `manifest/…`, `locks/…`), so a repository copied
//! between a directory and a bucket with any sync tool stays a repository.
//!
//! The contract of [`Backend`] maps onto S3 like this (docs/s3.md):
//! - A PUT (single or a completed multipart upload) is atomic: readers see
//!   the whole object or none, so no temporary names are needed.
//! - Packs and index files are named by the hash of their bytes: writing
//!   one again writes the same bytes, so a plain PUT is safe and retryable.
//! - Every other file must never replace an existing one: a HEAD first, then
//!   a PUT with `If-None-Match: *` (AWS, MinIO, R2, Ceph honour it; a store
//!   that ignores it is still covered by the HEAD and the repository lock).
//!   An "already exists" answer to a retried PUT is accepted when the object
//!   holds exactly our bytes.
//!
//! object_store (Apache Arrow) speaks the protocol: SigV4 with signed
//! payloads (the server checks every body's SHA-256), retries with
//! exponential backoff on 5xx/429/connection errors, paginated listing,
//! multipart uploads. It is async; this backend owns a small tokio runtime
//! and the rest of strata calls it synchronously.

use super::{Backend, FileInfo, FileKind, Space, Traffic, valid_name};
use crate::error::{Error, Result};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum, S3ConditionalPut};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};
use serde::Deserialize;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Objects larger than this go up as multipart uploads, their parts in
/// parallel: a 16 MiB pack travels as two 8 MiB parts.
pub const MULTIPART_THRESHOLD: usize = 12 * 1024 * 1024;
/// Part size of multipart uploads (S3's minimum is 5 MiB, except the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Requests in flight at once per repository (parts included): enough to
/// fill a long link, few enough for a Raspberry Pi serving Garage.
pub const MAX_REQUESTS: usize = 8;

/// `s3://BUCKET/PREFIX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Without leading or trailing slashes; may be empty (the bucket's root).
    pub prefix: String,
}

impl S3Url {
    pub fn is_s3(location: &str) -> bool {
        location.starts_with("s3://")
    }

    /// Parses an `s3://` URL; `None` when `location` is not one.
    pub fn parse(location: &str) -> Option<Result<Self>> {
        let rest = location.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Some(Err(Error::invalid(format!(
                "bad bucket name in `{location}`: S3 bucket names are 3-63 characters of a-z, 0-9, `-` and `.`"
            ))));
        }
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'=')
                })
        };
        if !prefix.is_empty() && !prefix.split('/').all(segment_ok) {
            return Some(Err(Error::invalid(format!(
                "bad prefix in `{location}`: use path segments of letters, digits, `-`, `_`, `.`, `+` and `=` (no `..`, no empty segments)"
            ))));
        }
        Some(Ok(Self {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }))
    }
}

/// S3 settings of a repository in strata.toml (`[repository.s3]`); every
/// field falls back to the environment (see [`S3Options::resolve`]).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// `http(s)://host:port` of the S3 API (Garage: port 3900). Unset: AWS.
    pub endpoint: Option<String>,
    /// Garage's `s3_region` (default `garage`), or the AWS region.
    pub region: Option<String>,
    /// Bucket in the path (`endpoint/bucket/key`) rather than in the host
    /// name; the default when an endpoint is given.
    pub path_style: Option<bool>,
    /// An AWS-style credentials file (`[profile]` sections with
    /// `aws_access_key_id` and `aws_secret_access_key`), mode 0600.
    pub credentials_file: Option<PathBuf>,
    /// The section of the credentials file (default `default`).
    pub profile: Option<String>,
    /// Sign each body's SHA-256 (the default). `false` sends bodies with a
    /// CRC64-NVME checksum instead, which the store verifies: a SHA-256
    /// pass less on both ends, for links that authenticate themselves
    /// (HTTPS, WireGuard).
    pub signed_payload: Option<bool>,
    /// How long a request is retried after transient failures (a node
    /// restarting, a Pi rebooting), in seconds; default 120.
    pub retry_seconds: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub key_id: String,
    pub secret: String,
    pub token: Option<String>,
}

/// Everything needed to reach a bucket, resolved from settings and the
/// environment.
#[derive(Clone, Debug)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    pub signed_payload: bool,
    pub retry_timeout: Duration,
    pub credentials: Credentials,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl S3Options {
    /// Settings first, then the environment (the AWS names, so existing
    /// tooling and habits carry over):
    /// - endpoint: `STRATA_S3_ENDPOINT`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`;
    /// - region: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`;
    /// - path style: `STRATA_S3_PATH_STYLE` (`true`/`false`), else on when an
    ///   endpoint is set;
    /// - credentials: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY`
    ///   (+ `AWS_SESSION_TOKEN`), else the credentials file (`credentials_file`,
    ///   `AWS_SHARED_CREDENTIALS_FILE`, `~/.aws/credentials`) section
    ///   `profile` / `AWS_PROFILE` / `default`.
    pub fn resolve(settings: Option<&S3Settings>, location: &str) -> Result<Self> {
        let s = settings.cloned().unwrap_or_default();
        let endpoint = s
            .endpoint
            .or_else(|| env("STRATA_S3_ENDPOINT"))
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .map(|e| e.trim_end_matches('/').to_string());
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(Error::invalid(format!(
                "S3 endpoint `{e}` for {location} is not a URL: write it as http://HOST:PORT or https://HOST"
            )));
        }
        let region = s
            .region
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let flag = |name: &str| match env(name).as_deref() {
            Some("1" | "true" | "yes") => Ok(Some(true)),
            Some("0" | "false" | "no") => Ok(Some(false)),
            Some(other) => Err(Error::invalid(format!(
                "{name}=`{other}`: use true or false"
            ))),
            None => Ok(None),
        };
        let path_style = match s.path_style {
            Some(p) => p,
            None => flag("STRATA_S3_PATH_STYLE")?.unwrap_or(endpoint.is_some()),
        };
        let signed_payload = match s.signed_payload {
            Some(p) => p,
            None => flag("STRATA_S3_SIGNED_PAYLOAD")?.unwrap_or(true),
        };
        let retry_seconds = match s.retry_seconds {
            Some(n) => n,
            None => match env("STRATA_S3_RETRY_SECONDS") {
                Some(v) => v.parse().map_err(|_| {
                    Error::invalid(format!(
                        "STRATA_S3_RETRY_SECONDS=`{v}`: use a number of seconds"
                    ))
                })?,
                None => 120,
            },
        };
        let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(key_id), Some(secret)) => Credentials {
                key_id,
                secret,
                token: env("AWS_SESSION_TOKEN"),
            },
            _ => {
                let file = s
                    .credentials_file
                    .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
                    .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
                let profile = s
                    .profile
                    .or_else(|| env("AWS_PROFILE"))
                    .unwrap_or_else(|| "default".into());
                credentials_from_file(file, &profile, location)?
            }
        };
        Ok(Self {
            endpoint,
            region,
            path_style,
            signed_payload,
            retry_timeout: Duration::from_secs(retry_seconds),
            credentials,
        })
    }
}

fn credentials_from_file(
    file: Option<PathBuf>,
    profile: &str,
    location: &str,
) -> Result<Credentials> {
    let missing = || {
        Error::invalid(format!(
            "no S3 credentials for {location}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put them in ~/.aws/credentials (or the repository's credentials_file)"
        ))
    };
    let Some(file) = file else {
        return Err(missing());
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(Error::io(format!("reading {}", file.display()), e)),
    };
    let section = parse_ini_section(&text, profile);
    match (
        section.get("aws_access_key_id"),
        section.get("aws_secret_access_key"),
    ) {
        (Some(k), Some(s)) => Ok(Credentials {
            key_id: k.clone(),
            secret: s.clone(),
            token: section.get("aws_session_token").cloned(),
        }),
        _ => Err(Error::Config(format!(
            "{}: no aws_access_key_id and aws_secret_access_key in section [{profile}]: add them, or choose the section with AWS_PROFILE",
            file.display()
        ))),
    }
}

/// The `key = value` pairs of one `[section]` of an INI file (the AWS
/// credentials format; `#` and `;` start comments).
fn parse_ini_section(text: &str, section: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            inside = name == section || name.strip_prefix("profile ") == Some(section);
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

pub struct S3Backend {
    store: Arc<AmazonS3>,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    prefix: String,
    location: String,
    identity: String,
    requests: Arc<Semaphore>,
    /// Off once the store has refused `If-None-Match` (it then relies on the
    /// HEAD check and the repository lock alone).
    conditional: AtomicBool,
    sent: Arc<AtomicU64>,
    received: AtomicU64,
}

impl S3Backend {
    pub fn open(url: &S3Url, location: &str, opts: &S3Options) -> Result<Self> {
        // reqwest's TLS uses rustls without a built-in provider; ring is the
        // one already in the tree (SSH, SMTP). Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ClientOptions::new()
            .with_allow_http(
                opts.endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            )
            .with_connect_timeout(Duration::from_secs(10))
            // A 8 MiB part over a 1 Mbit/s uplink takes ~70 s.
            .with_timeout(Duration::from_secs(300));
        // The back-off is drawn at random between `init_backoff` and `base`
        // times the previous one, so a short `init_backoff` can spend every
        // retry within a second or two of a node restarting (seen in the
        // tests): at least 1 s between tries, up to 30 s, for
        // `retry_timeout` (2 minutes unless set).
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(30),
                base: 3.0,
            },
            max_retries: 15,
            retry_timeout: opts.retry_timeout,
        };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&url.bucket)
            .with_region(&opts.region)
            .with_access_key_id(&opts.credentials.key_id)
            .with_secret_access_key(&opts.credentials.secret)
            .with_virtual_hosted_style_request(!opts.path_style)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_client_options(client)
            .with_retry(retry);
        if !opts.signed_payload {
            b = b
                .with_unsigned_payload(true)
                .with_checksum_algorithm(Checksum::CRC64NVME);
        }
        if let Some(t) = &opts.credentials.token {
            b = b.with_token(t);
        }
        if let Some(e) = &opts.endpoint {
            b = b.with_endpoint(e);
        }
        let store = b
            .build()
            .map_err(|e| Error::invalid(format!("S3 settings for {location}: {}", one_line(&e))))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the S3 client's runtime", e))?;
        let host = opts
            .endpoint
            .as_deref()
            .map(|e| e.split_once("://").map_or(e, |(_, h)| h).to_string())
            .unwrap_or_else(|| format!("aws-{}", opts.region));
        Ok(Self {
            store: Arc::new(store),
            runtime: Some(runtime),
            prefix: url.prefix.clone(),
            location: location.trim_end_matches('/').to_string(),
            identity: format!("s3://{host}/{}/{}", url.bucket, url.prefix),
            requests: Arc::new(Semaphore::new(MAX_REQUESTS)),
            conditional: AtomicBool::new(true),
            sent: Arc::new(AtomicU64::new(0)),
            received: AtomicU64::new(0),
        })
    }

    fn key(&self, kind: FileKind, name: &str) -> Result<Key> {
        if !valid_name(name) {
            return Err(Error::invalid(format!("bad repository file name `{name}`")));
        }
        let rel = match kind {
            FileKind::Config => name.to_string(),
            FileKind::Pack => format!("data/{}/{name}", &name[..2.min(name.len())]),
            _ => format!("{}/{name}", kind.dir()),
        };
        self.under_prefix(&rel)
    }

    fn under_prefix(&self, rel: &str) -> Result<Key> {
        let full = if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        };
        Key::parse(&full).map_err(|e| Error::invalid(format!("object key `{full}`: {e}")))
    }

    /// Runs `fut` on the backend's runtime and waits for it: callable from
    /// any thread, also from inside another tokio runtime (the daemon's).
    fn block<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        let rt = self.runtime.as_ref().ok_or_else(|| {
            Error::Remote(format!("{}: the S3 client is shut down", self.location))
        })?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let permits = self.requests.clone();
        rt.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::Remote(format!("{}: the S3 client stopped", self.location)))
    }

    /// A one-line error naming the object and, where there is one, the fix.
    fn error(&self, what: &str, key: &Key, e: object_store::Error) -> Error {
        let target = format!("{what} {}", self.describe(key));
        let io =
            |kind, msg: &str| Error::io(target.clone(), std::io::Error::new(kind, msg.to_string()));
        let text = one_line(&e);
        // The store's own verdict (`<Code>` and `<Message>` of its XML
        // answer) says more than the HTTP layer around it.
        let (code, said) = match store_error(&text) {
            Some((c, m)) => (c.clone(), format!("{c}: {m}")),
            None => (String::new(), text.clone()),
        };
        match e {
            _ if code == "NoSuchBucket" => Error::Remote(format!(
                "{target}: the bucket does not exist: create it first (`garage bucket create NAME`, `aws s3 mb s3://NAME`)"
            )),
            object_store::Error::NotFound { .. } => {
                io(std::io::ErrorKind::NotFound, "no such object")
            }
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => {
                io(std::io::ErrorKind::AlreadyExists, "file exists")
            }
            _ if code.contains("Quota") || said.to_ascii_lowercase().contains("quota") => {
                Error::DiskFull(format!("{target} (the bucket's quota is reached: {said})"))
            }
            _ if code == "AuthorizationHeaderMalformed" => Error::Denied(format!(
                "{target}: the store expects another region: set AWS_REGION (or the repository's s3.region) to the store's (Garage: its s3_region) ({said})"
            )),
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => Error::Denied(format!(
                "{target}: access denied: check the S3 credentials (AWS_ACCESS_KEY_ID or the credentials file) and the key's permissions on the bucket ({said})"
            )),
            _ if text.contains("error sending request")
                || text.contains("onnect")
                || text.contains("dns error") =>
            {
                Error::Remote(format!(
                    "{target}: cannot reach the S3 endpoint: check its URL (STRATA_S3_ENDPOINT or s3.endpoint) and that the store is running ({text})"
                ))
            }
            _ => Error::Remote(format!("{target}: {said}")),
        }
    }

    fn describe(&self, key: &Key) -> String {
        let rel = key
            .as_ref()
            .strip_prefix(self.prefix.as_str())
            .unwrap_or(key.as_ref())
            .trim_start_matches('/');
        format!("{}/{rel}", self.location)
    }

    /// An existing object is fine only if it holds exactly `data` (our own
    /// earlier attempt, whose answer was lost).
    fn same_or_exists(&self, key: &Key, data: &[u8]) -> Result<()> {
        let store = self.store.clone();
        let k = key.clone();
        let old = self
            .block(async move { store.get(&k).await?.bytes().await })?
            .map_err(|e| self.error("reading back", key, e))?;
        if old.as_ref() == data {
            Ok(())
        } else {
            Err(Error::io(
                format!("writing {}", self.describe(key)),
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists"),
            ))
        }
    }

    fn put_new(&self, key: &Key, data: &[u8]) -> Result<()> {
        let store = self.store.clone();
        let k = key.clone();
        match self.block(async move { store.head(&k).await })? {
            Ok(_) => return self.same_or_exists(key, data),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.error("checking", key, e)),
        }
        let conditional = self.conditional.load(Ordering::Relaxed);
        let mode = if conditional {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let store = self.store.clone();
        let (k, payload) = (key.clone(), PutPayload::from(Bytes::copy_from_slice(data)));
        let r = self.block(async move {
            store
                .put_opts(&k, payload, PutOptions::from(mode))
                .await
                .map(|_| ())
        })?;
        match r {
            Ok(()) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => self.same_or_exists(key, data),
            // A store that does not know conditional writes (some answer
            // 501 Not Implemented): HEAD and the lock guard it from now on.
            Err(e) if conditional && one_line(&e).contains("501") => {
                self.conditional.store(false, Ordering::Relaxed);
                self.put_new(key, data)
            }
            Err(e) => Err(self.error("writing", key, e)),
        }
    }

    fn put_content_addressed(&self, key: &Key, bytes: Bytes) -> Result<()> {
        let store = self.store.clone();
        let k = key.clone();
        let r = if bytes.len() > MULTIPART_THRESHOLD {
            // Parts travel in parallel; each holds a request permit of its
            // own, so this call runs outside the one-permit `block`.
            let permits = self.requests.clone();
            let rt = self.runtime.as_ref().ok_or_else(|| {
                Error::Remote(format!("{}: the S3 client is shut down", self.location))
            })?;
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            rt.spawn(async move {
                let _ = tx.send(put_multipart(store, k, bytes, permits).await);
            });
            rx.recv()
                .map_err(|_| Error::Remote(format!("{}: the S3 client stopped", self.location)))?
        } else {
            self.block(async move { store.put(&k, PutPayload::from(bytes)).await.map(|_| ()) })?
        };
        r.map_err(|e| self.error("writing", key, e))
    }

    fn list_under(&self, rel: &str) -> Result<Vec<object_store::ObjectMeta>> {
        let dir = self.under_prefix(rel)?;
        let store = self.store.clone();
        let d = dir.clone();
        self.block(async move { store.list(Some(&d)).try_collect::<Vec<_>>().await })?
            .map_err(|e| self.error("listing", &dir, e))
    }
}

/// Uploads `bytes` in `PART_SIZE` parts, `MAX_REQUESTS` at most at once
/// across the backend; aborts the upload on failure so no parts linger.
async fn put_multipart(
    store: Arc<AmazonS3>,
    key: Key,
    bytes: Bytes,
    permits: Arc<Semaphore>,
) -> object_store::Result<()> {
    let mut upload = {
        let _p = permits.acquire().await;
        store.put_multipart(&key).await?
    };
    let parts: Vec<_> = (0..bytes.len())
        .step_by(PART_SIZE)
        .map(|start| {
            let part = bytes.slice(start..(start + PART_SIZE).min(bytes.len()));
            // `put_part` numbers the part now; its future sends it later.
            let fut = upload.put_part(PutPayload::from(part));
            let permits = permits.clone();
            async move {
                let _p = permits.acquire().await;
                fut.await
            }
        })
        .collect();
    let sent = futures_util::stream::iter(parts)
        .buffer_unordered(MAX_REQUESTS)
        .try_collect::<Vec<()>>()
        .await;
    let done = match sent {
        Ok(_) => {
            let _p = permits.acquire().await;
            upload.complete().await.map(|_| ())
        }
        Err(e) => Err(e),
    };
    if done.is_err() {
        let _ = upload.abort().await;
    }
    done
}

/// `(Code, Message)` of an S3 XML error answer quoted in `text`.
fn store_error(text: &str) -> Option<(String, String)> {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&format!("</{name}>"))?;
        Some(
            text[start..start + len]
                .replace("&apos;", "'")
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    };
    let code = tag("Code")?;
    Some((code, tag("Message").unwrap_or_default()))
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl Drop for S3Backend {
    fn drop(&mut self) {
        // Dropping a runtime inside another one (the daemon's) would panic.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Backend for S3Backend {
    fn location(&self) -> &str {
        &self.location
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn high_latency(&self) -> bool {
        true
    }

    fn create(&self) -> Result<()> {
        let dir = self.under_prefix("config")?;
        let store = self.store.clone();
        let prefix = (!self.prefix.is_empty())
            .then(|| Key::parse(&self.prefix))
            .transpose()
            .map_err(|e| Error::invalid(format!("prefix `{}`: {e}", self.prefix)))?;
        let first =
            self.block(async move { store.list(prefix.as_ref()).next().await.transpose() })?;
        match first {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(Error::RepositoryExists(self.location.clone())),
            Err(e) => Err(self.error("listing", &dir, e)),
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        let info = |m: &object_store::ObjectMeta| FileInfo {
            name: m.location.filename().unwrap_or_default().to_string(),
            size: m.size,
            modified: m.last_modified.timestamp(),
        };
        let base = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.split('/').count()
        };
        let found = match kind {
            FileKind::Config => {
                let key = self.key(FileKind::Config, "config")?;
                let store = self.store.clone();
                let k = key.clone();
                return match self.block(async move { store.head(&k).await })? {
                    Ok(m) => Ok(vec![info(&m)]),
                    Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
                    Err(e) => Err(self.error("checking", &key, e)),
                };
            }
            // data/ab/NAME: exactly two levels below `data`.
            FileKind::Pack => self
                .list_under("data")?
                .into_iter()
                .filter(|m| m.location.parts().count() == base + 3)
                .collect::<Vec<_>>(),
            _ => self
                .list_under(kind.dir())?
                .into_iter()
                .filter(|m| m.location.parts().count() == base + 2)
                .collect(),
        };
        Ok(found
            .iter()
            .map(info)
            .filter(|f| valid_name(&f.name))
            .collect())
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let key = self.key(kind, name)?;
        let store = self.store.clone();
        let k = key.clone();
        let data = self
            .block(async move { store.get(&k).await?.bytes().await })?
            .map_err(|e| self.error("reading", &key, e))?;
        self.received
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(Vec::from(data))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let key = self.key(kind, name)?;
        if len > super::MAX_READ_RANGE {
            return Err(Error::corrupt(format!(
                "a read of {len} bytes from {} was requested",
                self.describe(&key)
            )));
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let store = self.store.clone();
        let k = key.clone();
        let range = offset..offset + u64::from(len);
        let data = self
            .block(async move { store.get_range(&k, range).await })?
            .map_err(|e| self.error("reading", &key, e))?;
        self.received
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if data.len() != len as usize {
            return Err(Error::io(
                format!("reading {len} bytes at {offset} of {}", self.describe(&key)),
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read"),
            ));
        }
        Ok(Vec::from(data))
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.write_owned(kind, name, data.to_vec())
    }

    fn write_owned(&self, kind: FileKind, name: &str, data: Vec<u8>) -> Result<()> {
        let key = self.key(kind, name)?;
        let len = data.len() as u64;
        if matches!(kind, FileKind::Pack | FileKind::Index) {
            self.put_content_addressed(&key, Bytes::from(data))?;
        } else {
            self.put_new(&key, &data)?;
        }
        self.sent.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let key = self.key(kind, name)?;
        let store = self.store.clone();
        let k = key.clone();
        match self.block(async move { store.delete(&k).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("deleting", &key, e)),
        }
    }

    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        let key = self.key(kind, name)?;
        let store = self.store.clone();
        let k = key.clone();
        match self.block(async move { store.head(&k).await })? {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("checking", &key, e)),
        }
    }

    fn space(&self) -> Result<Space> {
        Err(Error::Unsupported(format!(
            "{}: an S3 store reports no free space (watch the bucket's quota in the store)",
            self.location
        )))
    }

    fn traffic(&self) -> Option<Traffic> {
        Some(Traffic {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = S3Url::parse("s3://backups/hosts/alpha/").unwrap().unwrap();
        assert_eq!(u.bucket, "backups");
        assert_eq!(u.prefix, "hosts/alpha");
        let u = S3Url::parse("s3://backups").unwrap().unwrap();
        assert_eq!(u.prefix, "");
        assert!(S3Url::parse("/local/path").is_none());
        assert!(S3Url::parse("s3://B/x").unwrap().is_err());
        assert!(S3Url::parse("s3://backups/a/../b").unwrap().is_err());
        assert!(S3Url::parse("s3://backups/a//b").unwrap().is_err());
        assert!(S3Url::parse("s3://backups/a b").unwrap().is_err());
    }

    #[test]
    fn reads_a_credentials_section() {
        let text = "# comment\n[default]\naws_access_key_id = AK1\naws_secret_access_key=S1\n\n[profile garage]\nAWS_ACCESS_KEY_ID = GK2\naws_secret_access_key = S2 \n";
        let d = parse_ini_section(text, "default");
        assert_eq!(d.get("aws_access_key_id").map(String::as_str), Some("AK1"));
        assert_eq!(
            d.get("aws_secret_access_key").map(String::as_str),
            Some("S1")
        );
        let g = parse_ini_section(text, "garage");
        assert_eq!(g.get("aws_access_key_id").map(String::as_str), Some("GK2"));
        assert_eq!(
            g.get("aws_secret_access_key").map(String::as_str),
            Some("S2")
        );
        assert!(parse_ini_section(text, "other").is_empty());
    }

    #[test]
    fn finds_the_stores_verdict() {
        let t = "Error performing GET http://x/b/k in 1ms - Server returned non-2xx status code: 400 Bad Request: <?xml version=\"1.0\"?><Error><Code>AuthorizationHeaderMalformed</Code><Message>unexpected scope: &apos;us-east-1&apos;</Message></Error>";
        assert_eq!(
            store_error(t),
            Some((
                "AuthorizationHeaderMalformed".to_string(),
                "unexpected scope: 'us-east-1'".to_string()
            ))
        );
        assert_eq!(store_error("HTTP error: error sending request"), None);
    }
}
