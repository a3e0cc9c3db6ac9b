//! `rtmp://host[:port]/app[/key]` (and `rtmps://`, RTMP over TLS) as clients and our CLI
//! flags write it.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// `rtmps://`: TLS first (default port 443).
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub app: String,
    /// Everything after the app: the stream key (may contain '/' and a query).
    pub key: Option<String>,
}

/// What is wrong with a URL. The URL itself is not in the message: it may carry a stream
/// key or token; callers add a redacted form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("not an rtmp:// or rtmps:// URL")]
    Scheme,
    #[error("bad port {0:?}")]
    Port(String),
    #[error("missing host or app")]
    Missing,
}

impl RtmpUrl {
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let (tls, rest) = match (s.strip_prefix("rtmp://"), s.strip_prefix("rtmps://")) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            _ => return Err(UrlError::Scheme),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let default_port = if tls { 443 } else { 1935 };
        let (host, port) = match authority.rsplit_once(':') {
            // `[v6]` without a port: the colons are the address's.
            _ if authority.starts_with('[') && authority.ends_with(']') => {
                (&authority[1..authority.len() - 1], default_port)
            }
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse().map_err(|_| UrlError::Port(p.to_string()))?,
            ),
            _ => (authority, default_port),
        };
        let (app, key) = match path.split_once('/') {
            Some((a, k)) => (a, (!k.is_empty()).then(|| k.to_string())),
            None => (path, None),
        };
        if host.is_empty() || app.is_empty() {
            return Err(UrlError::Missing);
        }
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
            app: app.to_string(),
            key,
        })
    }

    /// The tcUrl clients send in connect: the URL without the key.
    pub fn tc_url(&self) -> String {
        format!(
            "{}://{}:{}/{}",
            self.scheme(),
            self.host,
            self.port,
            self.app
        )
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "rtmps"
        } else {
            "rtmp"
        }
    }

    /// The tcUrl for logs and the API: without a query on the app (`live?token=x`),
    /// which carries credentials.
    pub fn public(&self) -> String {
        let app = self.app.split('?').next().unwrap_or("");
        format!("{}://{}:{}/{}", self.scheme(), self.host, self.port, app)
    }

    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for RtmpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.tc_url())?;
        if let Some(k) = &self.key {
            write!(f, "/{k}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_form_hides_app_query() {
        let u = RtmpUrl::parse("rtmp://o.example/live?token=sekr1t").unwrap();
        assert_eq!(u.tc_url(), "rtmp://o.example:1935/live?token=sekr1t");
        assert_eq!(u.public(), "rtmp://o.example:1935/live");
    }

    #[test]
    fn parses_common_forms() {
        let u = RtmpUrl::parse("rtmp://127.0.0.1:1940/live/test?token=x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.app.as_str(), u.key.as_deref()),
            ("127.0.0.1", 1940, "live", Some("test?token=x"))
        );
        assert_eq!(u.tc_url(), "rtmp://127.0.0.1:1940/live");
        let u = RtmpUrl::parse("rtmp://a.example/app").unwrap();
        assert_eq!((u.port, u.key), (1935, None));
        let u = RtmpUrl::parse("rtmp://[::1]:1936/live/a/b").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.key.as_deref()),
            ("::1", 1936, Some("a/b"))
        );
        assert_eq!(u.authority(), "[::1]:1936");
        assert!(RtmpUrl::parse("http://x/y").is_err());
        assert!(RtmpUrl::parse("rtmp://x:notaport/y").is_err());
        assert!(RtmpUrl::parse("rtmp://x").is_err());
    }

    #[test]
    fn rtmps_defaults_to_443_and_keeps_its_scheme() {
        let u = RtmpUrl::parse("rtmps://live-api-s.facebook.com/rtmp/FB-1-2").unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 443);
        assert_eq!(u.tc_url(), "rtmps://live-api-s.facebook.com:443/rtmp");
        assert_eq!(u.public(), "rtmps://live-api-s.facebook.com:443/rtmp");
        let u = RtmpUrl::parse("rtmps://127.0.0.1:1936/live").unwrap();
        assert_eq!((u.tls, u.port), (true, 1936));
        assert!(!RtmpUrl::parse("rtmp://x/y").unwrap().tls);
        assert!(RtmpUrl::parse("rtmpx://x/y").is_err());
        let u = RtmpUrl::parse("rtmps://[2001:db8::1]/live").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("2001:db8::1", 443));
        assert_eq!(u.authority(), "[2001:db8::1]:443");
    }
}
