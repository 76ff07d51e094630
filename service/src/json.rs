//! [`Json`]: axum's JSON body extractor, also accepting integers written with a zero
//! fraction (`5.0`).
//!
//! JSON does not tell integers and other numbers apart, and JSON Schema (which the
//! OpenAPI documents use) counts `5.0` as an integer; serde does not, and refused such a
//! body with a 400 that the document does not predict. A body that deserialises as it is
//! takes the fast path unchanged; only one that fails is read again with integral
//! floating-point numbers turned into integers, and when that fails too the caller gets
//! axum's own rejection for the original body. A body must be a JSON object: serde
//! would otherwise read a struct from an array of its field values.

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A JSON request body; rejections are axum's [`JsonRejection`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = JsonRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        // Read the body as axum would (same limits, same rejections), keeping it for a
        // second reading.
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state).await?;
        // Every body of the APIs is a JSON object, but serde also reads a struct from an
        // array of its fields in order: `[null, null]` would pass as `{}`.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            let _object = axum::Json::<serde_json::Map<String, Value>>::from_bytes(&bytes)?;
        }
        let again = Request::from_parts(parts, Body::from(bytes.clone()));
        match axum::Json::<T>::from_request(again, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(
                rejection @ (JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_)),
            ) => integral_numbers_as_integers(&bytes)
                .map(Json)
                .ok_or(rejection),
            Err(rejection) => Err(rejection),
        }
    }
}

/// `bytes` as a `T` once every number with a zero fraction that fits an integer type is
/// written as that integer; `None` when it still does not deserialise.
fn integral_numbers_as_integers<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let mut value: Value = serde_json::from_slice(bytes).ok()?;
    if !normalise(&mut value) {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// Rewrites integral floats in place; whether anything changed.
fn normalise(value: &mut Value) -> bool {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Bounds checked on the float, so the casts below are exact.
            let integer = if f.fract() != 0.0 {
                None
            } else if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
                Some(Value::from(f as i64))
            } else if (0.0..1.844_674_407_370_955_2e19).contains(&f) {
                Some(Value::from(f as u64))
            } else {
                None
            };
            match integer {
                Some(i) => {
                    *value = i;
                    true
                }
                None => false,
            }
        }
        Value::Array(items) => items.iter_mut().fold(false, |c, v| normalise(v) | c),
        Value::Object(fields) => fields.values_mut().fold(false, |c, v| normalise(v) | c),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::CONTENT_TYPE;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Step {
        delta: i64,
        ttl: Option<u64>,
        ratio: Option<f64>,
    }

    async fn extract(content_type: &str, body: &str) -> Result<Step, JsonRejection> {
        let req = Request::builder()
            .header(CONTENT_TYPE, content_type)
            .body(Body::from(body.to_owned()))
            .unwrap();
        Json::<Step>::from_request(req, &()).await.map(|Json(s)| s)
    }

    #[tokio::test]
    async fn integral_floats_are_integers() {
        let step = extract(
            "application/json",
            r#"{"delta": -441.0, "ttl": 3e2, "ratio": 2.0}"#,
        )
        .await
        .unwrap();
        assert_eq!(
            step,
            Step {
                delta: -441,
                ttl: Some(300),
                ratio: Some(2.0)
            }
        );
    }

    #[tokio::test]
    async fn other_bodies_get_axums_rejections() {
        let fraction = extract("application/json", r#"{"delta": 1.5}"#).await;
        assert!(
            matches!(fraction, Err(JsonRejection::JsonDataError(_))),
            "{fraction:?}"
        );
        let negative = extract("application/json", r#"{"delta": 1, "ttl": -3.0}"#).await;
        assert!(
            matches!(negative, Err(JsonRejection::JsonDataError(_))),
            "{negative:?}"
        );
        let too_big = extract("application/json", r#"{"delta": 1e300}"#).await;
        assert!(
            matches!(too_big, Err(JsonRejection::JsonDataError(_))),
            "{too_big:?}"
        );
        let syntax = extract("application/json", r#"{"delta": "#).await;
        assert!(
            matches!(syntax, Err(JsonRejection::JsonSyntaxError(_))),
            "{syntax:?}"
        );
        let unknown = extract("application/json", r#"{"delta": 1.0, "x": 1}"#).await;
        assert!(
            matches!(unknown, Err(JsonRejection::JsonDataError(_))),
            "{unknown:?}"
        );
        let array = extract("application/json", r#"[1, null, null]"#).await;
        assert!(
            matches!(array, Err(JsonRejection::JsonDataError(_))),
            "{array:?}"
        );
        let not_json = extract("text/plain", r#"{"delta": 1}"#).await;
        assert!(
            matches!(not_json, Err(JsonRejection::MissingJsonContentType(_))),
            "{not_json:?}"
        );
    }
}
