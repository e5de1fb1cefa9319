//! HTTP test component: fetches the URL given in `?url=` and relays the result, so
//! tests can check the outbound allow-list.

use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let url = req
        .query()
        .split('&')
        .find_map(|kv| kv.strip_prefix("url="))
        .unwrap_or_default()
        .to_owned();
    let outgoing = Request::builder().method(Method::Get).uri(url).build();
    Ok(match spin_sdk::http::send::<_, Response>(outgoing).await {
        Ok(resp) => Response::builder()
            .status(200)
            .body(format!(
                "upstream {}: {}",
                resp.status(),
                String::from_utf8_lossy(resp.body())
            ))
            .build(),
        Err(e) => Response::builder()
            .status(502)
            .body(format!("outbound refused: {e}"))
            .build(),
    })
}
