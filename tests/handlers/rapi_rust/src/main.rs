// A stock lambda_runtime function (lambda_runtime::run), as it would run on
// Lambda's provided.al2023 as `bootstrap`: echo, a typed error, and the
// invocation's context (request id, ARN, deadline) in its answer.
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
struct BadOrder(String);

impl From<BadOrder> for Diagnostic {
    fn from(e: BadOrder) -> Diagnostic {
        Diagnostic { error_type: "BadOrder".into(), error_message: e.0 }
    }
}

async fn handle(ev: LambdaEvent<Value>) -> Result<Value, BadOrder> {
    let (payload, ctx) = ev.into_parts();
    let value = payload.get("value").cloned().unwrap_or(Value::Null);
    if payload.get("do").and_then(Value::as_str) == Some("fail") {
        return Err(BadOrder(format!("bad order {}", value.as_str().unwrap_or(""))));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    Ok(json!({
        "echo": value,
        "request_id": ctx.request_id,
        "function_arn": ctx.invoked_function_arn,
        "function_name": ctx.env_config.function_name,
        "memory_mb": ctx.env_config.memory,
        "deadline_ms": ctx.deadline,
        "now_ms": now as u64,
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(handle)).await
}
