//! The labels of an HTTP request, each from a bounded set: the route is the manifest's
//! pattern (`/v1/documents/...`), never the path a client sent, which carries document
//! ids and whatever a scanner tries; the method is one of the standard ones or
//! `_OTHER`, as OpenTelemetry's `http.request.method` does.

use prometheus_client::encoding::EncodeLabelSet;

use crate::manifest::App;

/// Labels of one request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `POST`, … or `_OTHER`.
    pub method: String,
    /// The route that served it ([`route`]).
    pub route: String,
    /// The response's status code.
    pub code: String,
}

/// What served `path`: a native endpoint's path (`/health`, `/metrics`,
/// `/v1/embeddings`, given in `endpoints`), the pattern of the manifest's route that
/// matches it, or `unmatched` (a 404, whatever the path).
pub fn route<'a>(app: &App, endpoints: impl IntoIterator<Item = &'a str>, path: &str) -> String {
    if let Some(p) = endpoints.into_iter().find(|p| *p == path) {
        return p.to_owned();
    }
    match app.http.iter().find(|t| t.route.matches(path)) {
        Some(t) => t.route.to_string(),
        None => UNMATCHED.to_owned(),
    }
}

/// The route label of a request no route serves.
pub const UNMATCHED: &str = "unmatched";

/// The method's label: a standard method's name, else `_OTHER`.
pub fn method(m: &http::Method) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    STANDARD
        .into_iter()
        .find(|s| *s == m.as_str())
        .unwrap_or("_OTHER")
}

/// A request being served: its labels, known before it is, and when it began.
#[derive(Debug)]
pub struct Timer {
    method: http::Method,
    route: String,
    started: std::time::Instant,
}

impl Timer {
    /// Starts timing a request to `path` on the host `shared`.
    pub fn start(shared: &crate::Shared, method: &http::Method, path: &str) -> Self {
        let native = shared.options.endpoints.iter().map(|(_, p, _)| p.as_str());
        Self {
            method: method.clone(),
            route: route(
                &shared.app,
                native.chain(["/health", "/metrics", crate::feed::PATH]),
                path,
            ),
            started: std::time::Instant::now(),
        }
    }

    /// The route serving the request ([`route`]).
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Records the request, answered with `status`.
    pub fn finish(self, metrics: &super::Metrics, status: http::StatusCode) {
        let seconds = self.started.elapsed().as_secs_f64();
        metrics.request(&self.method, self.route, status.as_u16(), seconds);
    }
}

impl super::Metrics {
    /// Records a request `route` answered with `status` after `seconds`.
    pub fn request(&self, method: &http::Method, route: String, status: u16, seconds: f64) {
        self.http
            .get_or_create(&RequestLabels {
                method: self::method(method).to_owned(),
                route,
                code: status.to_string(),
            })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Route;

    #[test]
    fn routes_are_the_manifests_patterns_never_the_raw_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spin.toml");
        std::fs::write(dir.path().join("api.wasm"), b"\0asm").unwrap();
        std::fs::write(
            &path,
            "spin_manifest_version = 2\n[application]\nname = \"t\"\n\
             [[trigger.http]]\nroute = \"/v1/documents/...\"\ncomponent = \"api\"\n\
             [[trigger.http]]\nroute = \"/v1/search\"\ncomponent = \"api\"\n\
             [[trigger.http]]\nroute = \"/...\"\ncomponent = \"api\"\n\
             [component.api]\nsource = \"api.wasm\"\n",
        )
        .unwrap();
        let app = App::load(&path).unwrap();
        let native = ["/health", "/metrics"];
        for (path, want) in [
            ("/v1/documents", "/v1/documents/..."),
            ("/v1/documents/0199-abc/events", "/v1/documents/..."),
            ("/v1/search", "/v1/search"),
            ("/metrics", "/metrics"),
            ("/wp-login.php", "/..."),
        ] {
            assert_eq!(route(&app, native, path), want, "{path}");
        }
        let catch_all = Route::Prefix("/".into());
        let app = App {
            http: app
                .http
                .iter()
                .filter(|t| t.route != catch_all)
                .cloned()
                .collect(),
            ..app
        };
        assert_eq!(route(&app, native, "/v1/searches"), "unmatched");
        assert_eq!(
            method(&http::Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
        assert_eq!(method(&http::Method::DELETE), "DELETE");
    }
}
