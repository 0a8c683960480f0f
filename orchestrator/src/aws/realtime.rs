//! The real-time stage's data on AWS, for the CLI: replaying events into Kinesis stream1
//! (`cartflow produce --backend aws`) and re-detecting the raw archive in S3 into the DynamoDB
//! alerts table (`cartflow reprocess --backend aws`). Deploying the stage itself is the
//! `streaming_stage` kind's AWS half.

use std::time::Duration;

use super::{AwsError, AwsSettings, Backoff, Clients, s3, sdk_config};

/// Reprocessing the detector on AWS: a replay of the raw archive in S3 through cartflow's
/// window engine — the same semantics as the Flink SQL (the conformance test runs both on the
/// same events) — replacing the alerts of the range in the DynamoDB table: new ones put,
/// changed ones updated, the ones the fixed rules no longer raise retracted, none duplicated.
/// The raw partitions of `from..=to` and the day after (a window of the last day may end
/// there) are downloaded to a scratch folder first.
pub fn reprocess(
    settings: &AwsSettings,
    rules: &cartflow_streaming::rules::RuleSet,
    from: &str,
    to: &str,
    dry_run: bool,
) -> Result<(cartflow_streaming::pipeline::ReprocessReport, u64), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let scratch =
        tempfile::Builder::new().prefix("cartflow-reprocess-").tempdir().map_err(|e| format!("scratch: {e}"))?;
    let day = |d: &str| cartflow_jobs::event::parse_event_time(&format!("{d} 00:00:00")).map(|t| t.div_euclid(86_400));
    let (d1, d2) =
        (day(from).ok_or(format!("`{from}` is not a date"))?, day(to).ok_or(format!("`{to}` is not a date"))?);
    let clients = Clients::new(rt.block_on(sdk_config()), settings);
    let mut objects = 0u64;
    for d in d1..=d2 + 1 {
        let date = cartflow_jobs::event::date_of(d * 86_400);
        let rel = format!("raw/events/dt={date}");
        let loc = settings.locate(&rel)?;
        objects +=
            rt.block_on(s3::download(&clients.s3, &loc, &scratch.path().join(&rel))).map_err(|e| e.to_string())?.len()
                as u64;
    }
    let mut store = cartflow_streaming::aws::DynamoAlerts::new(
        aws_sdk_dynamodb::Client::new(&clients.sdk),
        &settings.streaming.name("alerts"),
        rt.handle().clone(),
    );
    let rep = cartflow_streaming::pipeline::reprocess(scratch.path(), rules, from, to, &mut store, dry_run)
        .map_err(|e| e.to_string())?;
    Ok((rep, objects))
}

/// What the Kinesis producer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Produced {
    /// Records put into stream1.
    pub records: u64,
    /// PutRecords calls.
    pub batches: u64,
    /// Records Kinesis refused at first (throughput) and that were re-sent.
    pub retried: u64,
}

/// Replays `source` into Kinesis stream1 (`{prefix}stream1`) with PutRecords: batches of up
/// to 500 records, the user as partition key (a user's events stay in order within a shard),
/// records Kinesis refuses (throughput exceeded) re-sent with backoff, optionally at `rate`
/// events per second. Kinesis has no idempotent producer: a second run sends the events again.
pub fn produce(
    settings: &AwsSettings,
    source: &cartflow_streaming::pipeline::Source,
    rate: Option<f64>,
) -> Result<Produced, String> {
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let client = aws_sdk_kinesis::Client::new(&rt.block_on(sdk_config()));
    let stream = settings.streaming.name("stream1");
    let mut out = Produced::default();
    let started = std::time::Instant::now();
    let mut batch: Vec<PutRecordsRequestEntry> = Vec::with_capacity(500);
    let mut bytes = 0usize;
    let mut failure: Option<String> = None;
    let send = |batch: &mut Vec<PutRecordsRequestEntry>, out: &mut Produced| -> Result<(), String> {
        let mut pending = std::mem::take(batch);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 0..10 {
            if pending.is_empty() {
                return Ok(());
            }
            let res = rt
                .block_on(client.put_records().stream_name(&stream).set_records(Some(pending.clone())).send())
                .map_err(|e| AwsError::new("kinesis:PutRecords", &stream, e).to_string())?;
            out.batches += 1;
            let failed: Vec<PutRecordsRequestEntry> = res
                .records()
                .iter()
                .zip(&pending)
                .filter(|(r, _)| r.error_code().is_some())
                .map(|(_, e)| e.clone())
                .collect();
            out.records += (pending.len() - failed.len()) as u64;
            if attempt > 0 {
                out.retried += pending.len() as u64;
            }
            pending = failed;
            if !pending.is_empty() {
                std::thread::sleep(backoff.next_delay());
            }
        }
        Err(format!("AWS kinesis:PutRecords on {stream}: {} record(s) still refused after 10 tries", pending.len()))
    };
    let mut put = |line: &[u8], _t: Option<i64>| -> std::io::Result<()> {
        let key = cartflow_streaming::pipeline::event_partition_key(line);
        let size = line.len() + key.len();
        if batch.len() == 500 || bytes + size > 4_500_000 {
            if let Err(e) = send(&mut batch, &mut out) {
                failure = Some(e);
                return Err(std::io::Error::other("PutRecords failed"));
            }
            bytes = 0;
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(out.records as f64 / rate.max(0.001));
                if due > started.elapsed() {
                    std::thread::sleep(due - started.elapsed());
                }
            }
        }
        let entry = PutRecordsRequestEntry::builder()
            .data(Blob::new(line.to_vec()))
            .partition_key(key)
            .build()
            .map_err(std::io::Error::other)?;
        batch.push(entry);
        bytes += size;
        Ok(())
    };
    let fed = cartflow_streaming::pipeline::for_each_line(source, &mut put);
    if let Some(e) = failure {
        return Err(e);
    }
    fed.map_err(|e| e.to_string())?;
    if !batch.is_empty() {
        send(&mut batch, &mut out)?;
    }
    Ok(out)
}
