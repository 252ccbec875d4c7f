//! JSON as the etcd v3 gateway (grpc-gateway, proto3 JSON mapping) speaks it: bytes
//! as base64, 64-bit integers as strings (numbers are accepted too), enums by name or
//! number, default values left out of responses; and an extractor that turns every
//! body problem into the API's own error shape.

use axum::body::Bytes;
use axum::body::HttpBody as _;
use axum::extract::{FromRequest, Request};
use axum::RequestExt;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Serializer;

use crate::error::ApiError;

/// A JSON body: too large is 413, unreadable or malformed is 400, both as JSON errors.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A Content-Length over the limit is refused before any of the body is read:
        // otherwise a client announcing more than it sends kept the request (and its
        // connection slot) waiting for bytes that never come. The limit in force is
        // the body's size hint once wrapped by `DefaultBodyLimit` (`Limited` caps the
        // hint at what is left of the limit).
        let req = req.with_limited_body();
        let announced = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(announced), Some(limit)) = (announced, req.body().size_hint().upper()) {
            if announced > limit {
                return Err(ApiError::TooLarge);
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {rejection}"))
            }
        })?;
        // Every request is a JSON object (proto3 JSON maps a message to an object).
        // serde's derived structs would also take a JSON array of the fields in order,
        // so `["Zm9v","YmFy"]` was a put of foo=bar: refuse anything but an object.
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        let value = match first {
            None => serde_json::from_slice(b"{}"),
            Some(b'{') => serde_json::from_slice(&bytes),
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "malformed JSON body: the request must be a JSON object".into(),
                ))
            }
        };
        value
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
    }
}

/// `#[serde(with = "b64")]`: bytes as standard base64.
pub mod b64 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: Option<String> = serde::Deserialize::deserialize(d)?;
        match s {
            None => Ok(Vec::new()),
            Some(s) => STANDARD
                .decode(s.as_bytes())
                .map_err(|e| de::Error::custom(format!("invalid base64: {e}"))),
        }
    }
}

struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = i128;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer or a string holding one")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
        Ok(v.into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
        Ok(v.into())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
        v.trim()
            .parse::<i128>()
            .map_err(|_| E::custom(format!("invalid integer {v:?}")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<i128, E> {
        Ok(0)
    }
}

/// An unsigned 64-bit field given as a number or a string.
pub fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = d.deserialize_any(IntVisitor)?;
    u64::try_from(v).map_err(|_| de::Error::custom(format!("{v} is out of range for uint64")))
}

/// A signed 64-bit field given as a number or a string.
pub fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = d.deserialize_any(IntVisitor)?;
    i64::try_from(v).map_err(|_| de::Error::custom(format!("{v} is out of range for int64")))
}

/// 64-bit integers go out as strings, as proto3 JSON says.
pub fn ser_u64<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

pub fn ser_i64<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

pub fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

pub fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

pub fn is_false(v: &bool) -> bool {
    !*v
}

/// A proto enum given by name or by number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EnumValue {
    #[default]
    Zero,
    Name(String),
    Number(i64),
}

impl EnumValue {
    /// Resolves against the enum's names, in number order.
    pub fn resolve(&self, names: &[&str], field: &str) -> Result<usize, ApiError> {
        let i = match self {
            EnumValue::Zero => 0,
            EnumValue::Number(n) => usize::try_from(*n).unwrap_or(usize::MAX),
            EnumValue::Name(s) => names.iter().position(|n| n == s).unwrap_or(usize::MAX),
        };
        if i < names.len() {
            Ok(i)
        } else {
            Err(ApiError::BadRequest(format!(
                "invalid value {self:?} for {field}; expected one of {names:?}"
            )))
        }
    }
}

impl<'de> serde::Deserialize<'de> for EnumValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EnumValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an enum name or number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnumValue, E> {
                Ok(EnumValue::Name(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnumValue, E> {
                Ok(EnumValue::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnumValue, E> {
                Ok(EnumValue::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<EnumValue, E> {
                Ok(EnumValue::Zero)
            }
        }
        d.deserialize_any(V)
    }
}
