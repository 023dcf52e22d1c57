//! Id, secret and request-id formats, and parsing of path ids.
use base64::Engine as _;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RFC_B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

pub fn org_id(id: Uuid) -> String {
    format!("org_{id}")
}

pub fn key_id(id: Uuid) -> String {
    format!("key_{id}")
}

pub fn prj_id(id: Uuid) -> String {
    format!("prj_{id}")
}

pub fn txn_id(id: Uuid) -> String {
    format!("txn_{id}")
}

/// Accepts `<prefix>_<uuid>` or a bare UUID (hyphenated); anything else is malformed.
pub fn parse_id(raw: &str, prefix: &str) -> Option<Uuid> {
    let body = raw
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .unwrap_or(raw);
    if body.len() != 36 {
        return None;
    }
    Uuid::try_parse(body).ok()
}

/// `req_` + 26 Crockford base32 chars: 48 bits of milliseconds then 80 random bits (ULID layout).
pub fn request_id() -> String {
    let ms = jiff::Timestamp::now().as_millisecond().max(0) as u128;
    let rnd: u128 = rand::rng().random::<u128>() & ((1u128 << 80) - 1);
    let mut v = (ms << 80) | rnd;
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = CROCKFORD[(v & 31) as usize];
        v >>= 5;
    }
    let mut s = String::with_capacity(30);
    s.push_str("req_");
    s.push_str(std::str::from_utf8(&out).unwrap_or("00000000000000000000000000"));
    s
}

fn random_chars(alphabet: &[u8; 32], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| alphabet[rng.random_range(0..32)] as char)
        .collect()
}

fn random_b64url(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A new API key secret `lp_<env>_<16 base32>_<43 base64url>`; returns (secret, prefix).
pub fn new_api_key(env: &str) -> (String, String) {
    let handle = random_chars(RFC_B32, 16);
    let prefix = format!("lp_{env}_{handle}");
    let secret = format!("{prefix}_{}", random_b64url(32));
    (secret, prefix)
}

/// The safe-to-show handle of any key string: the documented prefix when the key has the
/// documented shape, otherwise only its first characters.
pub fn key_prefix(secret: &str) -> String {
    let parts: Vec<&str> = secret.splitn(4, '_').collect();
    if parts.len() == 4 && parts[0] == "lp" {
        format!("lp_{}_{}", parts[1], parts[2])
    } else {
        secret.chars().take(6).collect()
    }
}

pub fn new_signing_secret() -> String {
    format!("whsec_{}", random_b64url(24))
}

pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixed_and_bare() {
        let u = Uuid::new_v4();
        assert_eq!(parse_id(&org_id(u), "org"), Some(u));
        assert_eq!(parse_id(&u.to_string(), "org"), Some(u));
        assert_eq!(parse_id("org_nope", "org"), None);
        assert_eq!(parse_id(&format!("key_{u}"), "org"), None);
    }

    #[test]
    fn key_shape() {
        let (secret, prefix) = new_api_key("live");
        assert!(secret.starts_with(&prefix));
        assert_eq!(prefix.len(), "lp_live_".len() + 16);
        assert_eq!(secret.len(), prefix.len() + 1 + 43);
        assert_eq!(key_prefix(&secret), prefix);
        assert_eq!(request_id().len(), 30);
    }
}
