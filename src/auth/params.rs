//! Query-string parameters of a publish/play request (`token=`, `expires=`, `sign=`, and
//! anything else a callback may want to see).
//!
//! Queries are attacker-controlled, so parsing is bounded: a query longer than
//! [`MAX_QUERY_LEN`] is ignored as a whole (as if absent), at most [`MAX_PARAMS`] pairs are
//! kept, and nothing here can panic. Keys and values are percent-decoded (`%2F` -> `/`);
//! a malformed escape is kept literally and `+` stays `+` (not a space), so base64-style
//! tokens survive unencoded. When a key repeats, its first value is used.

/// Queries longer than this are ignored: no legitimate token or signature needs more, and
/// the cap bounds the work an attacker can cause per request.
pub const MAX_QUERY_LEN: usize = 4096;

/// Pairs kept per query; later ones are dropped.
pub const MAX_PARAMS: usize = 64;

/// The decoded `key=value` pairs of one query, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `a=1&b=2` (without the leading `?`; one is tolerated). `None`, an empty or an
    /// over-long query gives no parameters.
    pub fn parse(query: Option<&str>) -> Params {
        let Some(query) = query.filter(|q| q.len() <= MAX_QUERY_LEN) else {
            return Params::default();
        };
        let query = query.strip_prefix('?').unwrap_or(query);
        let pairs = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .filter(|(k, _)| !k.is_empty())
            .take(MAX_PARAMS)
            .collect();
        Params { pairs }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// The parameters of a request: the stream-name query first, then the connect query, so a
/// value in `publish("cam?token=x")` wins over one in `rtmp://host/live?token=y`.
#[derive(Debug, Clone, Default)]
pub struct RequestParams {
    pub stream: Params,
    pub connect: Params,
}

impl RequestParams {
    pub fn parse(stream_query: Option<&str>, connect_query: Option<&str>) -> Self {
        Self {
            stream: Params::parse(stream_query),
            connect: Params::parse(connect_query),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.stream.get(key).or_else(|| self.connect.get(key))
    }

    /// Every key once, with the value `get` would return.
    pub fn merged(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for (k, v) in self.stream.iter().chain(self.connect.iter()) {
            if !out.iter().any(|(seen, _)| *seen == k) {
                out.push((k, v));
            }
        }
        out
    }
}

/// `%XX` escapes decoded; invalid UTF-8 in the result becomes U+FFFD.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = match (b[i], b.get(i + 1), b.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex_val(h).zip(hex_val(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_keeps_first_duplicate() {
        let p = Params::parse(Some("token=abc&expires=12&sign=ff&token=other&flag"));
        assert_eq!(p.get("token"), Some("abc"));
        assert_eq!(p.get("expires"), Some("12"));
        assert_eq!(p.get("sign"), Some("ff"));
        assert_eq!(p.get("flag"), Some(""));
        assert_eq!(p.get("missing"), None);
    }

    #[test]
    fn percent_decodes_keys_and_values() {
        let p = Params::parse(Some("to%6Ben=a%2Fb%3D%3d&x=%E2%9C%93&plus=a+b"));
        assert_eq!(p.get("token"), Some("a/b=="));
        assert_eq!(p.get("x"), Some("✓"));
        assert_eq!(p.get("plus"), Some("a+b"), "+ is not a space");
    }

    #[test]
    fn malformed_escapes_are_kept_and_never_panic() {
        let p = Params::parse(Some("a=%&b=%4&c=%zz&d=%4g&e=%%41&f=%ff%fe"));
        assert_eq!(p.get("a"), Some("%"));
        assert_eq!(p.get("b"), Some("%4"));
        assert_eq!(p.get("c"), Some("%zz"));
        assert_eq!(p.get("d"), Some("%4g"));
        assert_eq!(p.get("e"), Some("%A"));
        assert_eq!(p.get("f"), Some("\u{fffd}\u{fffd}"));
        for q in ["", "&", "&&=&", "=", "==", "?", "?a=1", "%", "a=%e2%9c"] {
            let _ = Params::parse(Some(q));
        }
        assert_eq!(Params::parse(Some("?a=1")).get("a"), Some("1"));
        assert!(Params::parse(Some("=x&&")).is_empty());
    }

    #[test]
    fn overlong_queries_are_ignored_and_pairs_are_capped() {
        let long = format!("token=x&pad={}", "a".repeat(MAX_QUERY_LEN));
        assert!(Params::parse(Some(&long)).is_empty());
        let many: Vec<String> = (0..200).map(|i| format!("k{i}=v")).collect();
        let p = Params::parse(Some(&many.join("&")));
        assert_eq!(p.iter().count(), MAX_PARAMS);
        assert_eq!(p.get("k0"), Some("v"));
        assert_eq!(p.get("k199"), None);
    }

    #[test]
    fn stream_query_wins_over_connect_query() {
        let r = RequestParams::parse(Some("token=s&a=1"), Some("token=c&b=2"));
        assert_eq!(r.get("token"), Some("s"));
        assert_eq!(r.get("b"), Some("2"));
        assert_eq!(r.merged(), vec![("token", "s"), ("a", "1"), ("b", "2")]);
        let r = RequestParams::parse(None, Some("token=c"));
        assert_eq!(r.get("token"), Some("c"));
    }
}
