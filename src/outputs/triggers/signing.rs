//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//! keyed by the bytes of a `whsec_<base64>` secret. Used to sign webhook deliveries and,
//! in tests, by receivers to verify them.

use crate::config::triggers::webhook_key_bytes;
use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A decoded webhook signing key, ready to sign. Its `Debug` prints no key material.
#[derive(Clone)]
pub struct WebhookKey(Hmac<Sha256>);

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKey(<redacted>)")
    }
}

impl WebhookKey {
    /// Decodes `whsec_<base64>`. The error message never contains the secret.
    pub fn from_secret(secret: &Secret) -> Result<WebhookKey, String> {
        let key = webhook_key_bytes(secret)?;
        Hmac::<Sha256>::new_from_slice(&key)
            .map(WebhookKey)
            .map_err(|_| "the webhook key is not usable for HMAC-SHA256".to_owned())
    }

    /// The `webhook-signature` header value for one delivery attempt.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Whether any `v1,` signature in a (space-separated) `webhook-signature` header
    /// matches, compared in constant time.
    pub fn verify(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let expected = self.sign(msg_id, timestamp, body);
        header.split(' ').any(|candidate| crate::secret::ct_eq(candidate.as_bytes(), expected.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification.
    #[test]
    fn standard_webhooks_test_vector() {
        let key = WebhookKey::from_secret(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        let sig = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(key.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
            "v1,bm9ldHZhbGlk v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
        assert!(!key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, br#"{"test": 2432232314}"#, &sig));
    }

    #[test]
    fn malformed_secrets_are_rejected_without_echo() {
        for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_***notbase64***"] {
            let e = WebhookKey::from_secret(&Secret::new(bad)).unwrap_err();
            assert!(!e.contains("MfKQ") && !e.contains("notbase64"), "{e}");
        }
        let key = WebhookKey::from_secret(&Secret::new("whsec_c2VjcmV0")).unwrap();
        assert_eq!(format!("{key:?}"), "WebhookKey(<redacted>)");
    }
}
