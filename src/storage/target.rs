//! Where an output goes: a storage URL (`file:///dir`, `s3://bucket/prefix`,
//! `gs://bucket/prefix`) with its options, parsed once from the config. Credentials come
//! from the environment (the usual AWS and Google variables) and are never part of what
//! is shown or logged: a target's label is its URL without the query.

use std::path::PathBuf;

use super::StorageError;

/// S3 settings: the endpoint, region and addressing, and the keys to sign with.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// `http(s)://host[:port]`, without a trailing slash.
    pub endpoint: String,
    pub region: String,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key`.
    pub path_style: bool,
    /// (access key id, secret, session token); anonymous requests without them.
    pub credentials: Option<(String, String, Option<String>)>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("signed", &self.credentials.is_some())
            .finish()
    }
}

/// Google Cloud Storage (JSON API) settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsConfig {
    pub bucket: String,
    /// `https://storage.googleapis.com`, or an emulator's `http://host:port`.
    pub endpoint: String,
    /// A service-account JSON key file; none with an emulator.
    pub credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    File(PathBuf),
    S3(S3Config),
    Gcs(GcsConfig),
}

/// A parsed storage URL: the backend and the key prefix every object gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub backend: Backend,
    /// Empty, or ends with `/`.
    pub prefix: String,
    /// The URL without its query: what logs and metrics show.
    pub label: String,
}

impl Target {
    /// Parses `url` with the process environment (credentials, default endpoints).
    pub fn parse(url: &str) -> Result<Target, StorageError> {
        Self::parse_with(url, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn parse_with(
        url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Target, StorageError> {
        let bad = |why: &str| StorageError::Url {
            url: url.split('?').next().unwrap_or("").to_string(),
            why: why.to_string(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut opts: Vec<(&str, &str)> = Vec::new();
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            opts.push((k, v));
        }
        let opt = |name: &str| {
            opts.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let known: &[&str] = match scheme {
            "s3" => &["endpoint", "region", "path_style"],
            "gs" => &["endpoint", "credentials"],
            _ => &[],
        };
        if let Some((k, _)) = opts.iter().find(|(k, _)| !known.contains(k)) {
            return Err(bad(&format!("unknown option `{k}`")));
        }
        let split_bucket = || -> Result<(String, String), StorageError> {
            let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket"));
            }
            Ok((bucket.to_string(), normalize_prefix(prefix)))
        };
        let label = format!("{scheme}://{location}");
        let (backend, prefix) = match scheme {
            "file" => {
                if !location.starts_with('/') {
                    return Err(bad("a file:// URL needs an absolute path (file:///dir)"));
                }
                (Backend::File(PathBuf::from(location)), String::new())
            }
            "s3" => {
                let (bucket, prefix) = split_bucket()?;
                let region = opt("region")
                    .or_else(|| env("AWS_REGION"))
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".into());
                let given = opt("endpoint")
                    .or_else(|| env("AWS_ENDPOINT_URL_S3"))
                    .or_else(|| env("AWS_ENDPOINT_URL"));
                let path_style = match opt("path_style").as_deref() {
                    Some("true") | Some("1") => true,
                    Some("false") | Some("0") => false,
                    Some(_) => return Err(bad("path_style is true or false")),
                    // A custom endpoint (MinIO, SeaweedFS, R2) usually wants path style, and
                    // a dotted bucket name breaks the wildcard certificate of virtual hosts.
                    None => given.is_some() || bucket.contains('.'),
                };
                let endpoint = given
                    .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"))
                    .trim_end_matches('/')
                    .to_string();
                check_endpoint(&endpoint).map_err(&bad)?;
                let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                    (Some(id), Some(secret)) => Some((id, secret, env("AWS_SESSION_TOKEN"))),
                    _ => None,
                };
                let cfg = S3Config {
                    bucket,
                    endpoint,
                    region,
                    path_style,
                    credentials,
                };
                (Backend::S3(cfg), prefix)
            }
            "gs" => {
                let (bucket, prefix) = split_bucket()?;
                let emulator = env("STORAGE_EMULATOR_HOST").map(|h| {
                    if h.contains("://") {
                        h
                    } else {
                        format!("http://{h}")
                    }
                });
                let endpoint = opt("endpoint")
                    .or(emulator)
                    .unwrap_or_else(|| "https://storage.googleapis.com".into())
                    .trim_end_matches('/')
                    .to_string();
                check_endpoint(&endpoint).map_err(&bad)?;
                let credentials_file = opt("credentials")
                    .or_else(|| env("GOOGLE_APPLICATION_CREDENTIALS"))
                    .map(PathBuf::from);
                let cfg = GcsConfig {
                    bucket,
                    endpoint,
                    credentials_file,
                };
                (Backend::Gcs(cfg), prefix)
            }
            _ => return Err(bad("the scheme is file://, s3:// or gs://")),
        };
        Ok(Target {
            backend,
            prefix,
            label,
        })
    }

    /// The object key (or relative path) of `name` under this target.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

fn normalize_prefix(p: &str) -> String {
    let p = p.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

fn check_endpoint(e: &str) -> Result<(), &'static str> {
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .ok_or("the endpoint is an http:// or https:// URL")?;
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err("the endpoint is scheme://host[:port], nothing else");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn s3_urls_with_options_and_environment() {
        let t = Target::parse_with(
            "s3://media/live/hls/?endpoint=http://127.0.0.1:18333&region=eu-west-1",
            env(&[("AWS_ACCESS_KEY_ID", "AK"), ("AWS_SECRET_ACCESS_KEY", "SK")]),
        )
        .unwrap();
        assert_eq!(t.prefix, "live/hls/");
        assert_eq!(t.label, "s3://media/live/hls/");
        assert_eq!(t.key("a/b.m4s"), "live/hls/a/b.m4s");
        let Backend::S3(c) = &t.backend else {
            panic!("{t:?}")
        };
        assert_eq!(
            (
                c.bucket.as_str(),
                c.endpoint.as_str(),
                c.region.as_str(),
                c.path_style
            ),
            ("media", "http://127.0.0.1:18333", "eu-west-1", true)
        );
        assert!(c.credentials.is_some());
        assert!(!format!("{t:?}").contains("SK"), "no secret in Debug");
        // AWS itself: virtual-hosted style, the region's endpoint, anonymous without keys.
        let t = Target::parse_with("s3://b", env(&[("AWS_REGION", "us-west-2")])).unwrap();
        let Backend::S3(c) = &t.backend else { panic!() };
        assert_eq!(c.endpoint, "https://s3.us-west-2.amazonaws.com");
        assert!(!c.path_style && c.credentials.is_none() && t.prefix.is_empty());
    }

    #[test]
    fn gs_and_file_urls() {
        let t = Target::parse_with(
            "gs://bkt/x",
            env(&[("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")]),
        )
        .unwrap();
        assert_eq!(
            t.backend,
            Backend::Gcs(GcsConfig {
                bucket: "bkt".into(),
                endpoint: "http://127.0.0.1:4443".into(),
                credentials_file: None,
            })
        );
        let t = Target::parse_with("file:///var/lib/edge", env(&[])).unwrap();
        assert_eq!(t.backend, Backend::File("/var/lib/edge".into()));
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("s3://", "no bucket"),
            ("ftp://x", "scheme"),
            ("file://rel/dir", "absolute"),
            ("s3://b?endpoint=ftp://h", "http"),
            ("s3://b?endpoint=http://h/path", "nothing else"),
            ("s3://b?colour=red", "unknown option"),
            ("s3://b?path_style=maybe", "true or false"),
            ("bucket", "no scheme"),
        ] {
            let e = Target::parse_with(url, env(&[])).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
