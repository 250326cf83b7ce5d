//! Secrets in configuration: a [`Secret`] newtype whose `Debug` and `Display` print `***`, so
//! that no log line, error or `check-config` output can show one by accident, and helpers that
//! redact the secrets hidden in otherwise ordinary values (credentials in URLs, librdkafka
//! password properties).
//!
//! Secrets reach the configuration from the environment (`GRIDWATCH_…`) or from files named
//! by `…_file` keys (a Kubernetes secret mount), never from the command line, where any local
//! user could read them in the process list.

/// What every redacted secret prints as.
pub const REDACTED: &str = "***";

/// A secret value. Serializes as its value (the configuration's embedded defaults travel
/// through serde), but prints as `***`. Deserializes from a string, and also from a number or
/// a boolean (an environment variable `…_KEY=12345678` arrives as a number): a type error
/// would otherwise quote the secret in the error message.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Takes any scalar as the secret's text; refuses other shapes without quoting them.
struct SecretVisitor;

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a secret string")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
        Ok(Secret::new(value))
    }

    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Secret, E> {
        Ok(Secret(value))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_u128<E: serde::de::Error>(self, value: u128) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_i128<E: serde::de::Error>(self, value: i128) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_char<E: serde::de::Error>(self, value: char) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }
}

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: call only where it is used (a key, a header), never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (not configured).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return formatter.write_str("\"\"");
        }
        formatter.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, formatter)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

/// `url` with any `user:password@` replaced by `***:***@`, for logs and error texts. A text
/// that does not parse as a URL loses everything between `://` and the last `@` before the
/// first `/` after it, so a malformed URL cannot leak its credentials either.
pub fn redact_url(url: &str) -> String {
    if let Ok(mut parsed) = reqwest::Url::parse(url) {
        if parsed.username().is_empty() && parsed.password().is_none() {
            return url.to_string();
        }
        // Both setters fail only for URLs that cannot carry credentials, handled above.
        let _ = parsed.set_username(REDACTED);
        let _ = parsed.set_password(Some(REDACTED));
        return parsed.to_string();
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or(rest);
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let after_credentials = rest.get(at + 1..).unwrap_or_default();
    format!("{scheme}://{REDACTED}@{after_credentials}")
}

/// `url` without its credentials, and the credentials (`user`, `password`) when it had any:
/// the URL is what gets logged, the credentials go into an `Authorization` header.
pub fn split_url_credentials(url: &reqwest::Url) -> (reqwest::Url, Option<(String, Secret)>) {
    if url.username().is_empty() && url.password().is_none() {
        return (url.clone(), None);
    }
    let mut without = url.clone();
    let _ = without.set_username("");
    let _ = without.set_password(None);
    let username = decode_percent(url.username());
    let password = decode_percent(url.password().unwrap_or_default());
    (without, Some((username, Secret::new(password))))
}

/// Percent-decodes URL userinfo (`p%40ss` → `p@ss`); invalid sequences are kept as written.
fn decode_percent(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        let escaped = (byte == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex_digits| std::str::from_utf8(hex_digits).ok())
            .and_then(|hex_digits| u8::from_str_radix(hex_digits, 16).ok());
        match escaped {
            Some(value) => {
                decoded.push(value);
                index += 3;
            }
            None => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.password`,
/// `ssl.keystore.password`, `sasl.oauthbearer.client.secret`, `sasl.jaas.config`,
/// `ssl.key.pem`…): its value is never printed.
pub fn is_secret_kafka_property(name: &str) -> bool {
    let lowercase_name = name.to_ascii_lowercase();
    ["password", "secret", "jaas", "key.pem", "token"]
        .iter()
        .any(|marker| lowercase_name.contains(marker))
}

/// `properties` with the values of secret ones replaced by `***`, for `Debug` output.
pub fn redacted_properties(
    properties: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<&str, &str> {
    properties
        .iter()
        .map(|(name, value)| {
            let shown = if is_secret_kafka_property(name) {
                REDACTED
            } else {
                value.as_str()
            };
            (name.as_str(), shown)
        })
        .collect()
}

/// `text` with the value of every secret librdkafka property of `properties` replaced by
/// `***`: librdkafka error texts may quote a property value.
pub fn redact_property_values(
    text: &str,
    properties: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut redacted = text.to_string();
    for (name, value) in properties {
        if is_secret_kafka_property(name) && !value.is_empty() {
            redacted = redacted.replace(value.as_str(), REDACTED);
        }
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_as_stars_in_debug_and_display() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }

    #[test]
    fn url_credentials_are_redacted_even_when_the_url_does_not_parse() {
        assert_eq!(
            redact_url("http://admin:hunter2@am:9093/x"),
            "http://***:***@am:9093/x"
        );
        assert_eq!(redact_url("http://am:9093"), "http://am:9093");
        let broken = redact_url("http://admin:hunter2@[bad/x");
        assert!(!broken.contains("hunter2"), "{broken}");
    }

    #[test]
    fn credentials_split_off_a_url_are_percent_decoded() {
        let url = reqwest::Url::parse("https://bob:p%40ss@am.example:9093/").unwrap();
        let (without, credentials) = split_url_credentials(&url);
        assert_eq!(without.as_str(), "https://am.example:9093/");
        let (user, password) = credentials.unwrap();
        assert_eq!(user, "bob");
        assert_eq!(password.expose(), "p@ss");
    }

    #[test]
    fn secret_property_values_are_redacted_from_error_texts() {
        let properties: std::collections::BTreeMap<String, String> =
            [("sasl.password", "hunter2"), ("sasl.username", "bob")]
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .into();
        assert_eq!(
            redact_property_values("login bob with hunter2 failed", &properties),
            "login bob with *** failed"
        );
    }

    #[test]
    fn kafka_password_properties_are_secret() {
        for name in [
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
        ] {
            assert!(is_secret_kafka_property(name), "{name}");
        }
        assert!(!is_secret_kafka_property("security.protocol"));
    }
}
