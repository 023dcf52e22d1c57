//! Request body and query validation shared by the handlers.
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::model::Metadata;

pub const META_MAX_KEYS: usize = 50;
pub const META_MAX_KEY_CHARS: usize = 40;
pub const META_MAX_VALUE_CHARS: usize = 500;
pub const META_MAX_BYTES: usize = 16 * 1024;

/// Parses a JSON object body and rejects fields outside `allowed`. An empty body counts as `{}`
/// when `empty_ok`.
pub fn object(
    body: &[u8],
    allowed: &[&str],
    empty_ok: bool,
) -> Result<Map<String, Value>, ApiError> {
    object_with(body, allowed, empty_ok, false)
}

/// [`object`], dropping unknown fields instead of refusing them when `ignore_unknown`
/// (`--unknown-fields ignore`).
pub fn object_with(
    body: &[u8],
    allowed: &[&str],
    empty_ok: bool,
    ignore_unknown: bool,
) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(Map::new())
        } else {
            Err(ApiError::validation(
                "request body is required (a JSON object)",
            ))
        };
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::validation(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(mut map) = v else {
        return Err(ApiError::validation("request body must be a JSON object"));
    };
    if ignore_unknown {
        map.retain(|k, _| allowed.contains(&k.as_str()));
    }
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::validation(format!("unknown field {k:?}"))
            .with_details(serde_json::json!({ "field": k })));
    }
    Ok(map)
}

fn field_err(field: &str, msg: &str) -> ApiError {
    ApiError::validation(format!("{field}: {msg}"))
        .with_details(serde_json::json!({ "field": field }))
}

/// A string of `min..=max` characters.
pub fn string(v: &Value, field: &str, min: usize, max: usize) -> Result<String, ApiError> {
    let Value::String(s) = v else {
        return Err(field_err(field, "must be a string"));
    };
    let n = s.chars().count();
    if n < min || n > max || (min > 0 && s.trim().is_empty()) {
        return Err(field_err(
            field,
            &format!("must be {min} to {max} characters"),
        ));
    }
    Ok(s.clone())
}

pub fn opt_string(
    map: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Option<Option<String>>, ApiError> {
    match map.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => string(v, field, 0, max).map(|s| Some(Some(s))),
    }
}

pub fn email(v: &Value) -> Result<String, ApiError> {
    let s = string(v, "billingEmail", 3, 254)?;
    let ok = s
        .split_once('@')
        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && !s.chars().any(char::is_whitespace);
    if !ok {
        return Err(field_err("billingEmail", "must be an email address"));
    }
    Ok(s)
}

/// A JSON integer within `min..=max` (floats, strings and out-of-range values are refused).
pub fn integer(v: &Value, field: &str, min: i64, max: i64) -> Result<i64, ApiError> {
    let n = v
        .as_i64()
        .ok_or_else(|| field_err(field, "must be an integer"))?;
    if n < min || n > max {
        return Err(field_err(
            field,
            &format!("must be between {min} and {max}"),
        ));
    }
    Ok(n)
}

pub fn check_metadata(m: &Metadata) -> Result<(), ApiError> {
    if m.len() > META_MAX_KEYS {
        return Err(field_err("metadata", "at most 50 keys"));
    }
    for (k, v) in m {
        if k.is_empty() || k.chars().count() > META_MAX_KEY_CHARS {
            return Err(field_err("metadata", "keys must be 1 to 40 characters"));
        }
        if v.chars().count() > META_MAX_VALUE_CHARS {
            return Err(field_err(
                "metadata",
                "values must be at most 500 characters",
            ));
        }
    }
    let size = serde_json::to_vec(m).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > META_MAX_BYTES {
        return Err(field_err("metadata", "must be at most 16 KB"));
    }
    Ok(())
}

/// Metadata on create: a string map returned unchanged (row 1), so `""` is stored as an
/// empty value; only PATCH gives `""` the meaning "remove this key".
pub fn metadata_new(v: &Value) -> Result<Metadata, ApiError> {
    let Value::Object(map) = v else {
        return Err(field_err("metadata", "must be an object of strings"));
    };
    if map.len() > META_MAX_KEYS {
        return Err(field_err("metadata", "at most 50 keys"));
    }
    let mut out = Metadata::new();
    for (k, val) in map {
        match val {
            Value::String(s) => {
                out.insert(k.clone(), s.clone());
            }
            Value::Null => {
                return Err(field_err(
                    "metadata",
                    &format!("key {k:?} is null; values must be strings"),
                ));
            }
            _ => return Err(field_err("metadata", "values must be strings")),
        }
    }
    check_metadata(&out)?;
    Ok(out)
}

/// Stripe-style merge: keys set or overwritten, `""` removes, `null` (the whole field) clears,
/// a per-key `null` is refused. Limits are checked on the result.
pub fn merge_metadata(target: &mut Metadata, v: &Value) -> Result<(), ApiError> {
    match v {
        Value::Null => target.clear(),
        Value::Object(map) => {
            if map.len() > META_MAX_KEYS * 4 {
                return Err(field_err("metadata", "at most 50 keys"));
            }
            let mut next = target.clone();
            for (k, val) in map {
                match val {
                    Value::String(s) if s.is_empty() => {
                        next.remove(k);
                    }
                    Value::String(s) => {
                        next.insert(k.clone(), s.clone());
                    }
                    Value::Null => {
                        return Err(field_err(
                            "metadata",
                            &format!("key {k:?} is null; send \"\" to remove a key"),
                        ));
                    }
                    _ => return Err(field_err("metadata", "values must be strings")),
                }
            }
            check_metadata(&next)?;
            *target = next;
        }
        _ => return Err(field_err("metadata", "must be an object of strings")),
    }
    Ok(())
}

/// Parses a `limit` query value.
pub fn limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(field_err(
            "limit",
            &format!("must be an integer from 1 to {max}"),
        )),
    }
}

pub fn encode_cursor(before_seq: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"before\":{before_seq}}}"))
}

/// Cursors are opaque base64url JSON `{"before": seq}`; anything else is 422.
pub fn decode_cursor(raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let bad = || field_err("cursor", "is not a cursor returned by this API");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    v.get("before")
        .and_then(Value::as_u64)
        .map(Some)
        .ok_or_else(bad)
}

/// Parses a query string into decoded pairs.
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_rules() {
        let mut m = Metadata::new();
        merge_metadata(&mut m, &json!({"a":"1","b":"2"})).unwrap();
        merge_metadata(&mut m, &json!({"a":"","c":"3"})).unwrap();
        assert_eq!(m.keys().cloned().collect::<Vec<_>>(), vec!["b", "c"]);
        assert!(merge_metadata(&mut m, &json!({"b": null})).is_err());
        assert_eq!(m.len(), 2, "a refused merge changes nothing");
        merge_metadata(&mut m, &Value::Null).unwrap();
        assert!(m.is_empty());
        let big: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(merge_metadata(&mut m, &Value::Object(big)).is_err());
    }

    #[test]
    fn cursor_roundtrip_and_garbage() {
        assert_eq!(decode_cursor(Some(&encode_cursor(42))).unwrap(), Some(42));
        assert!(decode_cursor(Some("!!")).is_err());
        assert!(decode_cursor(Some("eyJ4IjoxfQ")).is_err());
        assert_eq!(
            query_pairs(Some("a=b%20c&d")),
            vec![("a".into(), "b c".into()), ("d".into(), "".into())]
        );
        assert_eq!(query_pairs(Some("x=%")), vec![("x".into(), "%".into())]);
        assert_eq!(query_pairs(Some("x=%4")), vec![("x".into(), "%4".into())]);
    }
}
