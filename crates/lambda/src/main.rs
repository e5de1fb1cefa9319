//! `troupe-lambda`: the Lambda `bootstrap` that hosts Troupe's function components.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use troupe_lambda::{Adapter, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TROUPE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .without_time()
        .with_writer(std::io::stderr)
        .init();
    let scale = troupe_cli::backend::Scale::from_env(false).await?;
    let adapter = Adapter::start(Config::from_env()?, scale).await?;
    let adapter = &adapter;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        adapter
            .handle(event.payload)
            .await
            .map_err(|e| lambda_runtime::Error::from(format!("{e:#}")))
    }))
    .await
}
