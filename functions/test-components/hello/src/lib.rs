//! HTTP test component: answers every request with a greeting; `?sleep_ms=N` first
//! waits N ms (a guest blocked on the host, for timeout tests); `?panic` panics with
//! a message naming a file (whose text must not reach the client).

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    if req.query().split('&').any(|kv| kv == "panic") {
        panic!("cannot open /var/lib/troupe/secret-config.toml: permission denied");
    }
    if let Some(ms) = req
        .query()
        .split('&')
        .find_map(|kv| kv.strip_prefix("sleep_ms="))
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(format!("Hello from Troupe: {}\n", req.path()))
        .build())
}
