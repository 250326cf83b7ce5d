//! Reading query strings strictly, and keyset pagination.
//!
//! [`ApiQuery`] replaces axum's `Query`: a silently ignored parameter (`?severity=1` before
//! this module) looks like a filter that works, so unknown and repeated parameters are
//! rejected, and a malformed value is reported by its parameter's name with what it accepts
//! (axum's own rejection is a text/plain 400 that names neither).
//!
//! Pages are cut by sort key, not by offset: a cursor is the (base64url JSON) sort key of the
//! last item served, tagged with the list it belongs to, so a page boundary stays put while
//! the snapshot underneath changes between two requests (no item is served twice or skipped
//! because an earlier one moved).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::problem::{Allowed, ApiError};

/// Default page size of paginated lists.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size a client may ask for.
pub const MAX_LIMIT: u32 = 500;
/// Longest parameter name echoed back in a problem (a name is client input).
const MAX_ECHOED_NAME_CHARS: usize = 64;

/// A query-string struct the API accepts: its parameter names and what each accepts.
pub trait QueryParams: DeserializeOwned {
    /// Every parameter name this query accepts (the `allowed` of an unknown parameter).
    const NAMES: &'static [&'static str];

    /// What `parameter` accepts, for the problem of a value that does not parse.
    fn allowed(parameter: &str) -> Allowed;
}

/// A query string parsed strictly into `T` (see the module doc); rejects with an
/// [`ApiError`] problem.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: QueryParams,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

fn echoed(name: &str) -> String {
    name.chars().take(MAX_ECHOED_NAME_CHARS).collect()
}

/// Parses `raw` (the query string without `?`) into `T`, rejecting unknown and repeated
/// parameters and naming the parameter whose value does not parse.
pub fn parse_query<T: QueryParams>(raw: &str) -> Result<T, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).map_err(|_| {
        ApiError::BadRequest(
            "the query string is not application/x-www-form-urlencoded UTF-8".to_string(),
        )
    })?;
    for (index, (name, _)) in pairs.iter().enumerate() {
        if !T::NAMES.contains(&name.as_str()) {
            return Err(ApiError::bad_parameter(
                &echoed(name),
                "unknown query parameter",
                Allowed::values(T::NAMES.iter().copied()),
            ));
        }
        if pairs.iter().take(index).any(|(earlier, _)| earlier == name) {
            return Err(ApiError::bad_parameter(
                name,
                "query parameter given more than once",
                T::allowed(name),
            ));
        }
    }
    serde_urlencoded::from_str::<T>(raw).map_err(|_| {
        // Which one failed: each pair alone parses unless it is the bad one.
        let bad = pairs.iter().find(|(name, value)| {
            let single = serde_urlencoded::to_string([(name, value)]).unwrap_or_default();
            serde_urlencoded::from_str::<T>(&single).is_err()
        });
        match bad {
            Some((name, _)) => ApiError::bad_parameter(
                name,
                "query parameter value does not parse",
                T::allowed(name),
            ),
            None => ApiError::BadRequest("the query parameters do not fit together".to_string()),
        }
    })
}

/// The page size of `limit` (default [`DEFAULT_LIMIT`]); 0 and above [`MAX_LIMIT`] are errors.
pub fn page_limit(limit: Option<u32>) -> Result<usize, ApiError> {
    bounded("limit", limit, DEFAULT_LIMIT, MAX_LIMIT)
}

/// `value` (or `default`) when within 1..=`max`; otherwise a problem naming the range.
pub fn bounded(
    parameter: &str,
    value: Option<u32>,
    default: u32,
    max: u32,
) -> Result<usize, ApiError> {
    let value = value.unwrap_or(default);
    if value == 0 || value > max {
        return Err(ApiError::bad_parameter(
            parameter,
            format!("{parameter} must be between 1 and {max} (the cap)"),
            limit_range(max),
        ));
    }
    Ok(usize::try_from(value).unwrap_or(usize::MAX))
}

/// The allowed range of a page size capped at `max`.
pub fn limit_range(max: u32) -> Allowed {
    Allowed::Range {
        minimum: 1,
        maximum: i64::from(max),
    }
}

/// What `cursor` accepts (it is opaque: only a value the API gave).
pub fn cursor_allowed() -> Allowed {
    Allowed::values(["the next_cursor of a previous page of the same list"])
}

/// The decoded content of a cursor: which list, and the sort key of the last item served.
#[derive(Serialize, Deserialize)]
struct CursorContent<K> {
    list: String,
    after: K,
}

/// One page of a list sorted ascending by unique keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of the page.
    pub items: Vec<T>,
    /// The cursor of the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// The page of `sorted` (ascending by `key`, keys unique) after `cursor`, at most `limit`
/// items. `list` names the list (and its variant, e.g. the view) so that a cursor of another
/// list is refused rather than misread.
pub fn paginate<T, K, F>(
    sorted: Vec<T>,
    key: F,
    list: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page<T>, ApiError>
where
    K: Ord + Serialize + DeserializeOwned,
    F: Fn(&T) -> K,
{
    let after = match cursor {
        None => None,
        Some(cursor) => Some(decode_cursor::<K>(cursor, list)?),
    };
    let mut remaining = sorted
        .into_iter()
        .filter(|item| after.as_ref().is_none_or(|after| &key(item) > after));
    let items: Vec<T> = remaining.by_ref().take(limit).collect();
    let more = remaining.next().is_some();
    let next_cursor = match items.last() {
        Some(last) if more => Some(encode_cursor(list, &key(last))),
        _ => None,
    };
    Ok(Page { items, next_cursor })
}

fn encode_cursor<K: Serialize>(list: &str, after: &K) -> String {
    let content = CursorContent {
        list: list.to_string(),
        after,
    };
    let json = serde_json::to_vec(&content).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor<K: DeserializeOwned>(cursor: &str, list: &str) -> Result<K, ApiError> {
    let bad = |detail: &str| ApiError::bad_parameter("cursor", detail, cursor_allowed());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad("the cursor is not one this API issued"))?;
    let content: CursorContent<K> =
        serde_json::from_slice(&bytes).map_err(|_| bad("the cursor is not one this API issued"))?;
    if content.list != list {
        return Err(bad(
            "the cursor belongs to another list (or another view or filter)",
        ));
    }
    Ok(content.after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        top: Option<u32>,
        view: Option<String>,
    }

    impl QueryParams for Sample {
        const NAMES: &'static [&'static str] = &["top", "view"];
        fn allowed(parameter: &str) -> Allowed {
            match parameter {
                "top" => limit_range(100),
                _ => Allowed::values(["15m"]),
            }
        }
    }

    use crate::api::problem::bad_parameter_of as parameter_of;

    #[test]
    fn known_parameters_parse_and_percent_decoding_applies() {
        let sample: Sample = parse_query("top=3&view=1%20h").unwrap();
        assert_eq!(
            sample,
            Sample {
                top: Some(3),
                view: Some("1 h".into())
            }
        );
        let empty: Sample = parse_query("").unwrap();
        assert_eq!(empty.top, None);
    }

    #[test]
    fn an_unknown_parameter_is_rejected_naming_the_known_ones() {
        let (parameter, allowed) =
            parameter_of(parse_query::<Sample>("top=1&severity=1").unwrap_err());
        assert_eq!(parameter, "severity");
        assert_eq!(allowed, Allowed::values(["top", "view"]));
    }

    #[test]
    fn a_malformed_value_is_rejected_by_its_parameter_name() {
        let (parameter, allowed) =
            parameter_of(parse_query::<Sample>("view=1h&top=abc").unwrap_err());
        assert_eq!(parameter, "top");
        assert_eq!(allowed, limit_range(100));
    }

    #[test]
    fn a_repeated_parameter_is_rejected() {
        let (parameter, _) = parameter_of(parse_query::<Sample>("view=1h&view=15m").unwrap_err());
        assert_eq!(parameter, "view");
    }

    #[test]
    fn limits_default_to_50_and_refuse_zero_and_above_the_cap() {
        assert_eq!(page_limit(None).unwrap(), 50);
        assert_eq!(page_limit(Some(500)).unwrap(), 500);
        for bad in [0, 501] {
            let (parameter, allowed) = parameter_of(page_limit(Some(bad)).unwrap_err());
            assert_eq!(parameter, "limit");
            assert_eq!(allowed, limit_range(500));
        }
    }

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats() {
        let items: Vec<u32> = (0..7).collect();
        let mut cursor = None;
        let mut served = Vec::new();
        loop {
            let page =
                paginate(items.clone(), |item| *item, "numbers", cursor.as_deref(), 3).unwrap();
            served.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(served, items);
    }

    #[test]
    fn a_page_boundary_survives_an_item_disappearing_before_it() {
        let first = paginate(vec![1, 2, 3, 4], |item| *item, "n", None, 2).unwrap();
        assert_eq!(first.items, [1, 2]);
        let second = paginate(
            vec![1, 3, 4],
            |item| *item,
            "n",
            first.next_cursor.as_deref(),
            2,
        )
        .unwrap();
        assert_eq!(second.items, [3, 4]);
        assert_eq!(second.next_cursor, None);
    }

    #[test]
    fn foreign_and_garbage_cursors_are_rejected() {
        let page = paginate(vec![1, 2, 3], |item| *item, "alerts", None, 1).unwrap();
        let cursor = page.next_cursor.unwrap();
        let other_list = paginate(vec![1, 2, 3], |item| *item, "cells:15m", Some(&cursor), 1);
        assert_eq!(parameter_of(other_list.unwrap_err()).0, "cursor");
        for garbage in ["***", "bm90IGpzb24", ""] {
            let error = paginate(vec![1], |item| *item, "alerts", Some(garbage), 1).unwrap_err();
            assert_eq!(parameter_of(error).0, "cursor", "{garbage:?}");
        }
    }
}
