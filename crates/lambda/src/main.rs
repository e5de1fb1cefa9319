//! `troupe-lambda`: the Lambda `bootstrap` that hosts Troupe's function components.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use troupe_lambda::{Adapter, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let format = match std::env::var("TROUPE_LOG_FORMAT") {
        Ok(f) => f.parse()?,
        Err(_) => troupe_telemetry::LogFormat::Text,
    };
    // Each function is its own service in a trace, named as Lambda names it.
    let service = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "troupe".into());
    let telemetry = troupe_telemetry::init(Some(&service), format)?;
    let scale = troupe_cli::backend::Scale::from_env(false).await?;
    let adapter = Adapter::start(Config::from_env()?, scale).await?;
    let (adapter, telemetry) = (&adapter, &telemetry);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let answer = adapter
            .handle(event.payload)
            .await
            .map_err(|e| lambda_runtime::Error::from(format!("{e:#}")));
        // Lambda freezes the sandbox once the answer is sent: export now.
        if telemetry.exporting() {
            tokio::task::block_in_place(|| telemetry.flush());
        }
        answer
    }))
    .await
}
