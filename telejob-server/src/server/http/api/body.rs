//! JSON request bodies: `Content-Type: application/json` (415 otherwise), one JSON object and
//! nothing after it (400 otherwise), the field of a type error named (422).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};

use super::error::{ApiError, ApiResult};

/// The body of a request that must be JSON.
#[derive(Debug)]
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        Bytes::from_request(req, state)
            .await
            .map(Self)
            .map_err(|e| ApiError::bad_field("body", e.body_text()).with_status(e.status()))
    }
}

/// Parses a JSON object into `T`, naming the field of a type error.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::bad_field(
                "body",
                "the request body is empty: send a JSON object",
            ));
        }
        Some(b'{') => {}
        Some(_) => return Err(ApiError::bad_field("body", "send a JSON object")),
    }
    refuse_duplicate_keys(body)?;
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => {
                ApiError::bad_field("body", format!("malformed JSON: {inner}"))
            }
            serde_json::error::Category::Data => {
                let field = if path == "." {
                    "body".to_string()
                } else {
                    path
                };
                ApiError::invalid(&field, inner.to_string())
            }
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_field("body", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// 400 naming the key when an object of `body` has the same key twice (serde_json would keep
/// the last one silently, so what the user meant is unknown). Malformed JSON is left to the
/// parse that follows.
fn refuse_duplicate_keys(body: &[u8]) -> ApiResult<()> {
    use serde::de::DeserializeSeed;
    let twice = std::cell::RefCell::new(None);
    let mut track = serde_path_to_error::Track::new();
    let mut json = serde_json::Deserializer::from_slice(body);
    let de = serde_path_to_error::Deserializer::new(&mut json, &mut track);
    if NoDuplicateKeys(&twice).deserialize(de).is_ok() {
        return Ok(());
    }
    let Some(key) = twice.into_inner() else {
        return Ok(()); // malformed: the parse that follows says where
    };
    let at = track.path().to_string();
    let field = if at == "." {
        key.clone()
    } else {
        format!("{at}.{key}")
    };
    Err(ApiError::bad_field(
        &field,
        format!("the key {key:?} is given twice: give each key once"),
    ))
}

/// Walks any JSON value, refusing an object with a key twice (and keeping that key).
#[derive(Clone, Copy)]
struct NoDuplicateKeys<'a>(&'a std::cell::RefCell<Option<String>>);

impl<'de> serde::de::DeserializeSeed<'de> for NoDuplicateKeys<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while a.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(k) = m.next_key::<String>()? {
            if seen.contains(&k) {
                *self.0.borrow_mut() = Some(k.clone());
                return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
            }
            m.next_value_seed(self)?;
            seen.insert(k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_is_refused_naming_it() {
        #[derive(Debug, serde::Deserialize)]
        struct Spec {
            #[allow(dead_code)]
            env: std::collections::BTreeMap<String, String>,
        }
        let e = parse_json::<Spec>(br#"{"env": {"A": "1", "A": "2"}}"#).expect_err("refused");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let text = format!("{e:?}");
        assert!(text.contains("given twice"), "{text}");
        assert_eq!(e.field(), Some("env.A"));
        assert!(
            parse_json::<Spec>(br#"{"env": {"A": "1", "B": "1"}, "x": [{"A": 1}, {"A": 2}]}"#)
                .is_ok()
        );
    }

    #[derive(Debug, serde::Deserialize)]
    struct T {
        #[allow(dead_code)]
        a: u32,
    }

    fn status(body: &str) -> Option<StatusCode> {
        parse_json::<T>(body.as_bytes()).err().map(|e| e.status())
    }

    #[test]
    fn bodies_are_one_json_object() {
        assert_eq!(status(r#"{"a": 1}"#), None);
        assert_eq!(status(" {\"a\": 1}\n"), None);
        assert_eq!(
            status(r#"{"a": 1} {"a": 2}"#),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(status(r#"{"a": 1}x"#), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status("[1]"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status("\"x\""), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status(""), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            status(r#"{"a": "x"}"#),
            Some(StatusCode::UNPROCESSABLE_ENTITY)
        );
    }
}

/// `Query` whose rejection is a JSON 400 naming the parameter, like every other API error.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." {
                "query".to_string()
            } else {
                field
            };
            ApiError::bad_field(&field, format!("query parameter: {}", e.into_inner()))
        })
    }
}

/// `Path` whose rejection (a segment that is not UTF-8 once decoded, say) is a JSON 400 naming
/// `path`, like every other API error.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|e| ApiError::bad_field("path", e.body_text()).with_status(e.status()))
    }
}
