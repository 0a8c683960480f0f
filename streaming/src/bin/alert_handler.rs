//! `cartflow-alert-handler`: the Lambda function behind stream2's event source mapping. Each
//! Kinesis record is an alert from the Flink application; [`handle`] stores it in DynamoDB with a
//! conditional put (a redelivered batch never duplicates), publishes the ones above their
//! notification threshold to SNS once, and writes its counters as CloudWatch EMF metrics.
//!
//! Environment: `ALERTS_TABLE` (DynamoDB table), `ALERTS_TOPIC_ARN` (SNS topic),
//! `METRICS_NAMESPACE` (default `cartflow`); credentials and region from the Lambda's role.
//! An error fails the invocation, so Lambda retries the batch.

use aws_lambda_events::event::kinesis::KinesisEvent;
use cartflow_streaming::aws::{DynamoAlerts, EmfMetrics, SnsNotifier};
use cartflow_streaming::handler::handle;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let table = std::env::var("ALERTS_TABLE").map_err(|_| "ALERTS_TABLE is not set")?;
    let topic = std::env::var("ALERTS_TOPIC_ARN").map_err(|_| "ALERTS_TOPIC_ARN is not set")?;
    let namespace = std::env::var("METRICS_NAMESPACE").unwrap_or_else(|_| "cartflow".into());
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let sns = aws_sdk_sns::Client::new(&config);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<KinesisEvent>| {
        let (ddb, sns, table, topic, namespace) =
            (ddb.clone(), sns.clone(), table.clone(), topic.clone(), namespace.clone());
        async move {
            let records: Vec<Vec<u8>> = ev.payload.records.into_iter().map(|r| r.kinesis.data.0).collect();
            let rt = tokio::runtime::Handle::current();
            let report = tokio::task::spawn_blocking(move || {
                let mut store = DynamoAlerts::new(ddb, &table, rt.clone());
                let mut notifier = SnsNotifier::new(sns, &topic, rt);
                let mut metrics = EmfMetrics::default();
                let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                let rep = handle(&refs, &mut store, &mut notifier, &mut metrics)?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                println!("{}", metrics.line(&namespace, now));
                Ok::<_, cartflow_streaming::handler::HandlerError>(rep)
            })
            .await??;
            Ok::<_, Error>(serde_json::to_value(report)?)
        }
    }))
    .await
}
