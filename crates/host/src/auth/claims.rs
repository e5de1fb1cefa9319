//! What a verified token's claims say: the tenant (from a configurable claim), the
//! scope (`scope` or `scp`) and the subject.

use serde_json::{Map, Value};
use troupe_events::Tenant;

use super::Scope;

/// Claims that do not make a principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The tenant claim is absent or not a string.
    #[error("the token has no `{0}` claim naming a tenant")]
    NoTenant(String),
    /// The tenant claim is not a valid tenant name.
    #[error("the token's `{claim}` claim: {why}")]
    BadTenant {
        /// The claim's name.
        claim: String,
        /// Why the name was refused.
        why: String,
    },
    /// No `sub` claim (rate limits and logs key on it).
    #[error("the token has no `sub` claim")]
    NoSubject,
}

/// The tenant named by claim `claim`.
pub fn tenant(claims: &Map<String, Value>, claim: &str) -> Result<Tenant, ClaimError> {
    let name = claims
        .get(claim)
        .and_then(Value::as_str)
        .ok_or_else(|| ClaimError::NoTenant(claim.to_owned()))?;
    Tenant::new(name).map_err(|e| ClaimError::BadTenant {
        claim: claim.to_owned(),
        why: e.to_string(),
    })
}

/// The highest of `read`, `write` and `admin` named in the `scope` claim (a
/// space-separated string) or the `scp` claim (a string or an array of strings);
/// `read` when neither names one.
pub fn scope(claims: &Map<String, Value>) -> Scope {
    let mut names: Vec<&str> = Vec::new();
    for claim in ["scope", "scp"] {
        match claims.get(claim) {
            Some(Value::String(s)) => names.extend(s.split_whitespace()),
            Some(Value::Array(items)) => names.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    names
        .into_iter()
        .filter_map(|n| n.parse::<Scope>().ok())
        .max()
        .unwrap_or(Scope::Read)
}

/// The `sub` claim.
pub fn subject(claims: &Map<String, Value>) -> Result<&str, ClaimError> {
    claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(ClaimError::NoSubject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn scope_is_the_highest_named() {
        let cases = [
            (json!({}), Scope::Read),
            (json!({"scope": ""}), Scope::Read),
            (json!({"scope": "openid profile"}), Scope::Read),
            (json!({"scope": "openid write"}), Scope::Write),
            (json!({"scope": "read admin write"}), Scope::Admin),
            (json!({"scp": "write"}), Scope::Write),
            (json!({"scp": ["read", "admin"]}), Scope::Admin),
            (json!({"scp": ["Write", 3, null]}), Scope::Read),
            (json!({"scope": "read", "scp": ["write"]}), Scope::Write),
            (json!({"scope": 7}), Scope::Read),
        ];
        for (c, want) in cases {
            assert_eq!(scope(&claims(c.clone())), want, "{c}");
        }
    }

    #[test]
    fn the_tenant_comes_from_the_configured_claim() {
        let c = claims(json!({"tenant": "acme", "org": "beta-2", "bad": "Acme/../x", "n": 5}));
        assert_eq!(tenant(&c, "tenant").unwrap().as_str(), "acme");
        assert_eq!(tenant(&c, "org").unwrap().as_str(), "beta-2");
        assert_eq!(
            tenant(&c, "missing"),
            Err(ClaimError::NoTenant("missing".into()))
        );
        assert_eq!(tenant(&c, "n"), Err(ClaimError::NoTenant("n".into())));
        let e = tenant(&c, "bad").unwrap_err().to_string();
        assert!(
            e.contains("`bad` claim") && e.contains("not a tenant name"),
            "{e}"
        );
    }

    #[test]
    fn the_subject_is_required() {
        assert_eq!(subject(&claims(json!({"sub": "u1"}))), Ok("u1"));
        assert_eq!(
            subject(&claims(json!({"sub": ""}))),
            Err(ClaimError::NoSubject)
        );
        assert_eq!(subject(&claims(json!({}))), Err(ClaimError::NoSubject));
    }
}
