//! A record of every DynamoDB call a function makes, as the IAM actions
//! that authorize it, for the deployability test (`tests/deploy/`) to hold
//! against the function's role in `template.yaml`. DynamoDB Local checks no
//! IAM at all, so without this a role that cannot make a call is found only
//! by a deployment.
//!
//! Off unless `AWS_CALL_LOG` names a file: then each request, as it is
//! sent, appends one JSON line per action to that file:
//! `{"function": "<binary>", "action": "dynamodb:PutItem", "table": "<name>", "index": null}`.
//! A `TransactWriteItems` is written as the item actions IAM checks for it,
//! one per item (`Put` as `dynamodb:PutItem`, `Update`, `Delete`,
//! `ConditionCheck` as `dynamodb:ConditionCheckItem`; "Using IAM with
//! DynamoDB transactions", DynamoDB Developer Guide); `TransactGetItems`
//! as `dynamodb:GetItem`s. Every other operation, `BatchWriteItem`
//! included, is its own IAM action (the Service Authorization Reference
//! lists `dynamodb:BatchWriteItem`), on each table it names.

use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
};

use aws_sdk_dynamodb::{
    config::{
        interceptors::BeforeTransmitInterceptorContextRef, ConfigBag, Intercept, RuntimeComponents,
    },
    error::BoxError,
};
use serde_json::{json, Value};

/// The variable naming the file calls are appended to.
pub const CALL_LOG_VAR: &str = "AWS_CALL_LOG";

/// Appends the IAM actions of every request to a file.
#[derive(Debug)]
pub struct CallLog {
    path: PathBuf,
    function: String,
}

impl CallLog {
    /// The recorder `AWS_CALL_LOG` asks for, if any. The function is the
    /// running binary's name (`cargo lambda watch` runs each function as
    /// its own binary).
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os(CALL_LOG_VAR)?;
        let exe = std::env::current_exe().ok();
        let function = exe
            .as_deref()
            .and_then(Path::file_stem)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Some(Self {
            path: path.into(),
            function,
        })
    }
}

/// The IAM actions one request needs: `(action, table, index)`.
pub fn iam_actions(target: &str, body: &Value) -> Vec<(String, String, Option<String>)> {
    let operation = target.rsplit('.').next().unwrap_or(target);
    let table = |v: &Value| v["TableName"].as_str().unwrap_or_default().to_owned();
    match operation {
        "TransactWriteItems" | "TransactGetItems" => {
            let items = body["TransactItems"].as_array().into_iter().flatten();
            items
                .filter_map(|item| {
                    let (kind, inner) = item.as_object()?.iter().next()?;
                    let action = match kind.as_str() {
                        "Put" => "PutItem",
                        "Update" => "UpdateItem",
                        "Delete" => "DeleteItem",
                        "ConditionCheck" => "ConditionCheckItem",
                        "Get" => "GetItem",
                        _ => return None,
                    };
                    Some((format!("dynamodb:{action}"), table(inner), None))
                })
                .collect()
        }
        "BatchWriteItem" | "BatchGetItem" => {
            let tables = body["RequestItems"].as_object().into_iter().flatten();
            tables
                .map(|(t, _)| (format!("dynamodb:{operation}"), t.clone(), None))
                .collect()
        }
        _ => {
            let index = body["IndexName"].as_str().map(str::to_owned);
            vec![(format!("dynamodb:{operation}"), table(body), index)]
        }
    }
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let body = request.body().bytes().unwrap_or_default();
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut lines = String::new();
        for (action, table, index) in iam_actions(target, &body) {
            let line = json!({
                "function": self.function,
                "action": action,
                "table": table,
                "index": index,
            });
            lines.push_str(&format!("{line}\n"));
        }
        // One write per request, appended: the functions run at once.
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(lines.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_is_the_item_actions_iam_checks() {
        let body = json!({"TransactItems": [
            {"Put": {"TableName": "t", "Item": {}}},
            {"Update": {"TableName": "t", "Key": {}}},
            {"ConditionCheck": {"TableName": "u", "Key": {}}},
        ]});
        let actions = iam_actions("DynamoDB_20120810.TransactWriteItems", &body);
        let names: Vec<_> = actions.iter().map(|(a, t, _)| format!("{a} {t}")).collect();
        assert_eq!(
            names,
            [
                "dynamodb:PutItem t",
                "dynamodb:UpdateItem t",
                "dynamodb:ConditionCheckItem u"
            ]
        );
    }

    #[test]
    fn a_query_of_an_index_names_it_and_a_batch_names_each_table() {
        let query = json!({"TableName": "t", "IndexName": "GSI1"});
        let actions = iam_actions("DynamoDB_20120810.Query", &query);
        assert_eq!(
            actions,
            [("dynamodb:Query".into(), "t".into(), Some("GSI1".into()))]
        );
        let batch = json!({"RequestItems": {"t": [{"DeleteRequest": {}}]}});
        let actions = iam_actions("DynamoDB_20120810.BatchWriteItem", &batch);
        assert_eq!(
            actions,
            [("dynamodb:BatchWriteItem".into(), "t".into(), None)]
        );
    }
}
