//! Signed URLs: `?expires=<unix seconds>&sign=<hex HMAC-SHA256(secret, "{app}/{name}:{expires}")>`.
//!
//! The signature covers the stream (`app/name`, without any query) and the expiry, so a
//! signed URL cannot be replayed for another stream or past its expiry. `expires` is the
//! decimal number of seconds (the signed text uses its canonical form, without leading
//! zeros or a sign); `sign` is 64 hex digits (lowercase is what signers produce; uppercase
//! is accepted too). The signature is checked before the expiry, so `Expired` is only ever
//! reported for URLs that were genuinely signed with the secret. Comparison is constant
//! time (`Mac::verify_slice`).
//!
//! Shell signer: `printf '%s' "live/cam1:$exp" | openssl dgst -sha256 -hmac "$SECRET"`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::params::hex_val;

type HmacSha256 = Hmac<Sha256>;

/// Why a signed URL was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("missing or malformed expires")]
    BadExpires,
    #[error("missing or malformed sign")]
    BadHex,
    #[error("signature does not match")]
    Mismatch,
    #[error("signed URL expired")]
    Expired,
}

/// An HMAC key for one action, kept as the keyed MAC state (cloned per check).
#[derive(Clone)]
pub struct Signer {
    keyed: HmacSha256,
}

impl std::fmt::Debug for Signer {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    /// `None` only if the MAC refused the key, which HMAC never does (any length works).
    pub fn new(secret: &str) -> Option<Self> {
        let keyed = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).ok()?;
        Some(Self { keyed })
    }

    fn mac(&self, stream: &str, expires: u64) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(stream.as_bytes());
        mac.update(b":");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// Lowercase hex signature of `stream` (`app/name`) valid until `expires`.
    #[cfg(test)]
    pub fn sign(&self, stream: &str, expires: u64) -> String {
        let tag = self.mac(stream, expires).finalize().into_bytes();
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Checks `sign` for `stream` and `expires` (both as presented, possibly absent).
    pub fn verify(
        &self,
        stream: &str,
        expires: Option<&str>,
        sign: Option<&str>,
        now_unix: u64,
    ) -> Result<(), SignError> {
        let expires = expires
            .and_then(parse_expires)
            .ok_or(SignError::BadExpires)?;
        let tag = sign.and_then(decode_hex32).ok_or(SignError::BadHex)?;
        self.mac(stream, expires)
            .verify_slice(&tag)
            .map_err(|_| SignError::Mismatch)?;
        if expires < now_unix {
            return Err(SignError::Expired);
        }
        Ok(())
    }
}

/// Decimal digits only: `+5`, ` 5` or `5.0` are refused rather than normalized.
fn parse_expires(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = hex_val(pair[0])? << 4 | hex_val(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From `printf '%s' "live/cam1:1700000000" | openssl dgst -sha256 -hmac "s3cret"`
    /// (OpenSSL 3.0), so the shell one-liner in the docs and this code agree.
    const OPENSSL_SIG: &str = "e127aab1b503e8c3b01f704a45db0fb7c8ffeb7835053cf77685ea88a7d06fc9";

    #[test]
    fn matches_openssl_vector() {
        let s = Signer::new("s3cret").unwrap();
        assert_eq!(s.sign("live/cam1", 1_700_000_000), OPENSSL_SIG);
        assert_eq!(
            s.verify(
                "live/cam1",
                Some("1700000000"),
                Some(OPENSSL_SIG),
                1_700_000_000
            ),
            Ok(())
        );
        let upper = OPENSSL_SIG.to_ascii_uppercase();
        assert_eq!(
            s.verify("live/cam1", Some("1700000000"), Some(&upper), 1),
            Ok(())
        );
    }

    #[test]
    fn rejects_wrong_expired_tampered_and_malformed() {
        let s = Signer::new("s3cret").unwrap();
        let now = 1_700_000_000;
        let exp = Some("1700000000");
        let sig = Some(OPENSSL_SIG);
        assert_eq!(
            s.verify("live/cam1", exp, sig, now + 1),
            Err(SignError::Expired)
        );
        assert_eq!(
            s.verify("live/cam2", exp, sig, now),
            Err(SignError::Mismatch)
        );
        assert_eq!(
            s.verify("live/cam1", Some("1700000001"), sig, now),
            Err(SignError::Mismatch)
        );
        assert_eq!(
            Signer::new("other")
                .unwrap()
                .verify("live/cam1", exp, sig, now),
            Err(SignError::Mismatch)
        );
        // A wrong signature on an old expiry is a bad signature, not "expired".
        let zeros = "0".repeat(64);
        assert_eq!(
            s.verify("live/cam1", exp, Some(&zeros), now + 10),
            Err(SignError::Mismatch)
        );
        for bad in ["", "zz", &OPENSSL_SIG[..62], &format!("{OPENSSL_SIG}00")] {
            assert_eq!(
                s.verify("live/cam1", exp, Some(bad), now),
                Err(SignError::BadHex)
            );
        }
        let nonhex = format!("g{}", &OPENSSL_SIG[1..]);
        assert_eq!(
            s.verify("live/cam1", exp, Some(&nonhex), now),
            Err(SignError::BadHex)
        );
        // Multi-byte characters must not split hex pairs into a panic.
        let wide = "é".repeat(32);
        assert_eq!(
            s.verify("live/cam1", exp, Some(&wide), now),
            Err(SignError::BadHex)
        );
        assert_eq!(
            s.verify("live/cam1", None, sig, now),
            Err(SignError::BadExpires)
        );
        assert_eq!(
            s.verify("live/cam1", exp, None, now),
            Err(SignError::BadHex)
        );
        for e in [
            "",
            "-1",
            "+1700000000",
            "1e9",
            "99999999999999999999999",
            " 1",
        ] {
            assert_eq!(
                s.verify("live/cam1", Some(e), sig, now),
                Err(SignError::BadExpires),
                "{e:?}"
            );
        }
    }
}
