//! OIDC access tokens from an issuer started by the test: discovery, JWKS, key
//! rotation, and the refetch interval for unknown key ids.

use super::*;

#[test]
fn oidc_tokens_from_a_real_issuer_with_key_rotation() {
    let (rsa1, ec1, rsa2) = (
        SigningKey::rsa("r1"),
        SigningKey::ec("e1"),
        SigningKey::rsa("r2"),
    );
    let issuer = Issuer::start(&[&rsa1, &ec1]);
    let dir = tempfile::tempdir().unwrap();
    let up = hello_api(
        dir.path(),
        &[
            "--oidc-issuer",
            &issuer.url,
            "--oidc-audience",
            "troupe-test",
            "--oidc-tenant-claim",
            "org",
            "--oidc-refetch-interval-ms",
            "0",
        ],
    );
    let url = format!("http://{}/v1/documents/x", up.addr);
    let post = |token: &str| request("POST", &url, &[("authorization", &bearer(token))], b"x");

    // RS256 and ES256 tokens from the issuer, tenant from the configured claim.
    let rs = rsa1.sign(&claims(&issuer, json!({})));
    assert_eq!(get_as(&url, &rs).status, 200);
    assert_eq!(post(&rs).status, 200, "scope `write` may write");
    let es = ec1.sign(&claims(&issuer, json!({"scope": null, "scp": ["read"]})));
    assert_eq!(get_as(&url, &es).status, 200);
    let r = post(&es);
    assert_eq!(
        (r.status, &r.body["error"]["code"]),
        (403, &json!("forbidden")),
        "{r:?}"
    );
    let admin = ec1.sign(&claims(&issuer, json!({"scope": "admin"})));
    assert_eq!(post(&admin).status, 200);

    // Refused: 401 with `invalid_token`.
    let now = oidc::now();
    let refused = [
        (
            "expired",
            rsa1.sign(&claims(&issuer, json!({"exp": now - 3600}))),
        ),
        (
            "not yet valid",
            rsa1.sign(&claims(&issuer, json!({"nbf": now + 3600}))),
        ),
        (
            "another audience",
            rsa1.sign(&claims(&issuer, json!({"aud": "another-api"}))),
        ),
        (
            "another issuer",
            rsa1.sign(&claims(&issuer, json!({"iss": "http://127.0.0.1:1"}))),
        ),
        ("no exp", rsa1.sign(&claims(&issuer, json!({"exp": null})))),
        ("an unknown key", rsa2.sign(&claims(&issuer, json!({})))),
        (
            "alg none",
            oidc::unsigned("r1", &claims(&issuer, json!({}))),
        ),
        (
            "HS256",
            oidc::hs256("r1", b"a shared secret", &claims(&issuer, json!({}))),
        ),
        (
            "an invalid tenant",
            ec1.sign(&claims(&issuer, json!({"org": "Acme/../x"}))),
        ),
        (
            "the tenant in another claim",
            ec1.sign(&claims(&issuer, json!({"org": null, "tenant": "acme"}))),
        ),
        (
            "no subject",
            ec1.sign(&claims(&issuer, json!({"sub": null}))),
        ),
    ];
    for (what, token) in &refused {
        assert_unauthorized(&get_as(&url, token), true, what);
    }
    // A token signed by one key but naming another's kid.
    let mut swapped = rs.split('.').map(str::to_owned).collect::<Vec<_>>();
    let other = rsa2.sign(&claims(&issuer, json!({})));
    swapped[2] = other.split('.').nth(2).unwrap().to_owned();
    assert_unauthorized(
        &get_as(&url, &swapped.join(".")),
        true,
        "a foreign signature",
    );

    // Rotation: the issuer publishes r2; its tokens are accepted without a restart.
    issuer.publish(&[&ec1, &rsa2]);
    let rotated = rsa2.sign(&claims(&issuer, json!({"sub": "user-2"})));
    assert_eq!(get_as(&url, &rotated).status, 200, "a new kid is picked up");
}

#[test]
fn unknown_key_ids_do_not_make_the_host_refetch_within_the_interval() {
    let (rsa1, rsa2) = (SigningKey::rsa("r1"), SigningKey::rsa("r2"));
    let issuer = Issuer::start(&[&rsa1]);
    let dir = tempfile::tempdir().unwrap();
    let up = hello_api(
        dir.path(),
        &[
            "--oidc-issuer",
            &issuer.url,
            "--oidc-audience",
            "troupe-test",
            "--oidc-refetch-interval-ms",
            "3600000",
        ],
    );
    let url = format!("http://{}/v1/x", up.addr);
    let tenant = json!({"org": null, "tenant": "acme"});
    assert_eq!(
        get_as(&url, &rsa1.sign(&claims(&issuer, tenant.clone()))).status,
        200
    );
    assert_eq!(issuer.jwks_fetches(), 1);
    issuer.publish(&[&rsa1, &rsa2]);
    for n in 0..5 {
        let token = rsa2.sign(&claims(
            &issuer,
            json!({"org": null, "tenant": "acme", "jti": n}),
        ));
        assert_unauthorized(&get_as(&url, &token), true, "a kid fetched too soon");
    }
    assert_eq!(
        issuer.jwks_fetches(),
        1,
        "unknown kids did not refetch within the interval"
    );
}
