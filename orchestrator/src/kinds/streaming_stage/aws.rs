//! The real-time stage on AWS, ensured as one unit — every step creates what is missing,
//! updates what changed and leaves the rest alone, so running it again is harmless:
//!
//! 1. Kinesis stream1 and stream2 (on-demand), waited for until ACTIVE;
//! 2. the DynamoDB alerts table (key `id`, on-demand), until ACTIVE; the SNS topic;
//! 3. Firehose from stream1 into the raw zone, partitioned on the events' own `event_time`
//!    (`raw/events/dt=YYYY-MM-DD/hour=HH/`, gzip, one event per line) as the local archiver;
//! 4. the Flink detector: the SQL generated from the rules file, bundled with its runner
//!    (`streaming/flink-app/main.py`) and uploaded under a content-addressed key; the
//!    application is created, or updated when the bundle changed, started, and waited for
//!    until RUNNING;
//! 5. the Lambda alert handler (updated when its package's SHA-256 changed) and its event
//!    source mapping from stream2, whose batches that still fail after their retries go to the
//!    SQS queue `{prefix}alert-handler-failures` (kept 14 days) instead of being dropped.
//!
//! The health check is the application's status: anything but RUNNING fails the task.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_firehose::types::{
    BufferingHints, CompressionFormat, DeliveryStreamType, DynamicPartitioningConfiguration,
    ExtendedS3DestinationConfiguration, KinesisStreamSourceConfiguration, ProcessingConfiguration, Processor,
    ProcessorParameter, ProcessorParameterName, ProcessorType,
};
use aws_sdk_kinesis::types::{StreamMode, StreamModeDetails, StreamStatus};
use aws_sdk_kinesisanalyticsv2::types::{
    ApplicationCodeConfiguration, ApplicationCodeConfigurationUpdate, ApplicationConfiguration,
    ApplicationConfigurationUpdate, ApplicationStatus, CodeContent, CodeContentType, CodeContentUpdate,
    EnvironmentProperties, EnvironmentPropertyUpdates, PropertyGroup, RuntimeEnvironment, S3ContentLocation,
    S3ContentLocationUpdate,
};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    Architecture, DestinationConfig, Environment, EventSourcePosition, FunctionCode, OnFailure, Runtime,
};
use aws_sdk_sqs::types::QueueAttributeName;
use base64::Engine as _;
use sha2::Digest as _;

use cartflow_streaming::rules::RuleSet;

use super::RenderedStreamingStage;
use crate::aws::{AwsEnv, AwsError, Backoff, S3Loc, StreamingSettings, s3};
use crate::task::{TaskContext, TaskFailure, TaskOutput};

/// The Flink application's runner, bundled next to the generated SQL.
pub const FLINK_RUNNER: &str = include_str!("../../../../streaming/flink-app/main.py");

/// The JQ query Firehose partitions the raw zone with: the event's own date and hour.
pub const PARTITION_QUERY: &str = "{dt: .event_time[0:10], hour: .event_time[11:13]}";

/// What the stage on AWS is made of.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Names, roles and packages.
    pub settings: StreamingSettings,
    /// The generated Flink SQL (Kinesis source and sink).
    pub sql: String,
    /// Where the raw zone is (`raw/events`).
    pub raw: S3Loc,
    /// Where the Flink bundle goes.
    pub code: S3Loc,
}

struct Clients {
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    sns: aws_sdk_sns::Client,
    firehose: aws_sdk_firehose::Client,
    flink: aws_sdk_kinesisanalyticsv2::Client,
    lambda: aws_sdk_lambda::Client,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    /// How the waits for resources to become ready poll.
    backoff: Backoff,
}

fn required<'a>(v: &'a Option<String>, key: &str) -> Result<&'a str, TaskFailure> {
    v.as_deref().ok_or_else(|| {
        TaskFailure::permanent(format!(
            "set `aws.streaming.{key}` in cartflow.yaml (infra/ creates it; see the stack's outputs)"
        ))
    })
}

fn fail(e: AwsError) -> TaskFailure {
    TaskFailure::new(e.to_string())
}

/// The Flink application bundle: runner, SQL and (when configured) the connector jar.
pub fn flink_bundle(sql: &str, connector_jar: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut entries: Vec<(&str, &[u8], u32)> =
        vec![("main.py", FLINK_RUNNER.as_bytes(), 0o644), ("statements.sql", sql.as_bytes(), 0o644)];
    if let Some((name, bytes)) = connector_jar {
        entries.push((name, bytes, 0o644));
    }
    crate::zip::build(&entries)
}

/// The Lambda deployment package: a zip as given, or a binary zipped as `bootstrap`.
pub fn lambda_package(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.starts_with(b"PK\x03\x04") { bytes } else { crate::zip::build(&[("bootstrap", &bytes, 0o755)]) }
}

/// Base64 SHA-256, as Lambda reports `CodeSha256`.
pub fn sha256_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

async fn wait<F, Fut>(what: &str, c: &Clients, ctx: &TaskContext, mut ready: F) -> Result<(), TaskFailure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, AwsError>>,
{
    let mut backoff = c.backoff.clone();
    let until = tokio::time::Instant::now() + Duration::from_secs(30 * 60);
    loop {
        match ready().await.map_err(fail)? {
            None => return Ok(()),
            Some(state) => ctx.log.line(format_args!("{what}: {state}; waiting")),
        }
        if tokio::time::Instant::now() > until {
            return Err(TaskFailure::new(format!("{what} did not become ready in 30 minutes")));
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = ctx.cancel.cancelled() => return Err(TaskFailure::new(format!("cancelled while waiting for {what}"))),
        }
    }
}

/// Ensures the whole stage and checks its health; returns the summary line.
pub async fn ensure(stage: &Stage, aws: &AwsEnv, ctx: &TaskContext) -> Result<String, TaskFailure> {
    let base = &aws.clients;
    let sdk = &base.sdk;
    let c = Clients {
        kinesis: aws_sdk_kinesis::Client::new(sdk),
        dynamodb: aws_sdk_dynamodb::Client::new(sdk),
        sns: aws_sdk_sns::Client::new(sdk),
        firehose: aws_sdk_firehose::Client::new(sdk),
        flink: aws_sdk_kinesisanalyticsv2::Client::new(sdk),
        lambda: aws_sdk_lambda::Client::new(sdk),
        sqs: aws_sdk_sqs::Client::new(sdk),
        s3: base.s3.clone(),
        backoff: Backoff::new(aws.settings.poll.0.min(Duration::from_secs(5)), aws.settings.max_poll.0),
    };
    let s = &stage.settings;
    let log = &ctx.log;
    let stream1 = ensure_stream(&c, &s.name("stream1"), ctx).await?;
    let stream2 = ensure_stream(&c, &s.name("stream2"), ctx).await?;
    ensure_table(&c, &s.name("alerts"), ctx).await?;
    let topic = c
        .sns
        .create_topic()
        .name(s.name("alerts"))
        .send()
        .await
        .map_err(|e| fail(AwsError::new("sns:CreateTopic", s.name("alerts"), e)))?
        .topic_arn()
        .unwrap_or_default()
        .to_string();
    log.line(format_args!("SNS topic {topic}"));
    ensure_firehose(&c, stage, &stream1, ctx).await?;
    let version = ensure_flink(&c, stage, ctx).await?;
    let handler = ensure_lambda(&c, stage, &stream2, &topic, ctx).await?;
    Ok(format!(
        "real-time stage healthy: {} RUNNING (version {version}), {} and {} ACTIVE, alert handler {handler}",
        s.name("detector"),
        s.name("stream1"),
        s.name("stream2")
    ))
}

async fn ensure_stream(c: &Clients, name: &str, ctx: &TaskContext) -> Result<String, TaskFailure> {
    let describe = || async {
        match c.kinesis.describe_stream_summary().stream_name(name).send().await {
            Ok(out) => {
                Ok(out.stream_description_summary().map(|d| (d.stream_status().clone(), d.stream_arn().to_string())))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(AwsError::new("kinesis:DescribeStreamSummary", name, e)),
        }
    };
    if describe().await.map_err(fail)?.is_none() {
        let mode = StreamModeDetails::builder()
            .stream_mode(StreamMode::OnDemand)
            .build()
            .map_err(|e| fail(AwsError::new("kinesis:CreateStream", name, e)))?;
        c.kinesis
            .create_stream()
            .stream_name(name)
            .stream_mode_details(mode)
            .send()
            .await
            .map_err(|e| fail(AwsError::new("kinesis:CreateStream", name, e)))?;
        ctx.log.line(format_args!("Kinesis stream {name}: created (on-demand)"));
    }
    let arn = std::sync::Mutex::new(String::new());
    wait(&format!("Kinesis stream {name}"), c, ctx, || async {
        match describe().await? {
            Some((StreamStatus::Active, a)) => {
                *arn.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = a;
                Ok(None)
            }
            Some((status, _)) => Ok(Some(status.as_str().to_string())),
            None => Ok(Some("not visible yet".into())),
        }
    })
    .await?;
    ctx.log.line(format_args!("Kinesis stream {name}: ACTIVE"));
    Ok(arn.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
}

async fn ensure_table(c: &Clients, name: &str, ctx: &TaskContext) -> Result<(), TaskFailure> {
    let status = || async {
        match c.dynamodb.describe_table().table_name(name).send().await {
            Ok(out) => Ok(out.table().and_then(|t| t.table_status().cloned())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(AwsError::new("dynamodb:DescribeTable", name, e)),
        }
    };
    if status().await.map_err(fail)?.is_none() {
        let err = |e| fail(AwsError::new("dynamodb:CreateTable", name, e));
        c.dynamodb
            .create_table()
            .table_name(name)
            .key_schema(KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build().map_err(err)?)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(err)?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| fail(AwsError::new("dynamodb:CreateTable", name, e)))?;
        ctx.log.line(format_args!("DynamoDB table {name}: created"));
    }
    wait(&format!("DynamoDB table {name}"), c, ctx, || async {
        Ok(match status().await? {
            Some(TableStatus::Active) => None,
            Some(s) => Some(s.as_str().to_string()),
            None => Some("not visible yet".into()),
        })
    })
    .await
}

async fn ensure_firehose(c: &Clients, stage: &Stage, stream1_arn: &str, ctx: &TaskContext) -> Result<(), TaskFailure> {
    let name = stage.settings.name("archive");
    match c.firehose.describe_delivery_stream().delivery_stream_name(&name).send().await {
        Ok(_) => {
            ctx.log.line(format_args!("Firehose {name}: exists"));
            return Ok(());
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {}
        Err(e) => return Err(fail(AwsError::new("firehose:DescribeDeliveryStream", &name, e))),
    }
    let role = required(&stage.settings.firehose_role_arn, "firehose_role_arn")?;
    let err = |e| fail(AwsError::new("firehose:CreateDeliveryStream", name.clone(), e));
    let param = |n: ProcessorParameterName, v: &str| {
        ProcessorParameter::builder().parameter_name(n).parameter_value(v).build().map_err(err)
    };
    let raw = stage.raw.dir();
    let processing = ProcessingConfiguration::builder()
        .enabled(true)
        .processors(
            Processor::builder()
                .r#type(ProcessorType::MetadataExtraction)
                .parameters(param(ProcessorParameterName::MetadataExtractionQuery, PARTITION_QUERY)?)
                .parameters(param(ProcessorParameterName::JsonParsingEngine, "JQ-1.6")?)
                .build()
                .map_err(err)?,
        )
        .processors(Processor::builder().r#type(ProcessorType::AppendDelimiterToRecord).build().map_err(err)?)
        .build();
    let dest = ExtendedS3DestinationConfiguration::builder()
        .role_arn(role)
        .bucket_arn(format!("arn:aws:s3:::{}", raw.bucket))
        .prefix(format!("{}dt=!{{partitionKeyFromQuery:dt}}/hour=!{{partitionKeyFromQuery:hour}}/", raw.key))
        .error_output_prefix(format!("{}_errors/!{{firehose:error-output-type}}/!{{timestamp:yyyy-MM-dd}}/", raw.key))
        .compression_format(CompressionFormat::Gzip)
        .buffering_hints(BufferingHints::builder().size_in_mbs(64).interval_in_seconds(60).build())
        .dynamic_partitioning_configuration(DynamicPartitioningConfiguration::builder().enabled(true).build())
        .processing_configuration(processing)
        .build()
        .map_err(err)?;
    let source = KinesisStreamSourceConfiguration::builder()
        .kinesis_stream_arn(stream1_arn)
        .role_arn(role)
        .build()
        .map_err(err)?;
    c.firehose
        .create_delivery_stream()
        .delivery_stream_name(&name)
        .delivery_stream_type(DeliveryStreamType::KinesisStreamAsSource)
        .kinesis_stream_source_configuration(source)
        .extended_s3_destination_configuration(dest)
        .send()
        .await
        .map_err(|e| fail(AwsError::new("firehose:CreateDeliveryStream", &name, e)))?;
    ctx.log.line(format_args!("Firehose {name}: created, stream1 -> {raw}dt=…/hour=…/"));
    Ok(())
}

/// The property groups of the Flink application.
fn property_groups(jar: Option<&str>, sql_sha: &str) -> Result<Vec<PropertyGroup>, AwsError> {
    let mut run = PropertyGroup::builder()
        .property_group_id("kinesis.analytics.flink.run.options")
        .property_map("python", "main.py");
    if let Some(j) = jar {
        run = run.property_map("jarfile", j);
    }
    let run = run.build().map_err(|e| AwsError::new("kinesisanalyticsv2:PropertyGroup", "run options", e))?;
    let ours = PropertyGroup::builder()
        .property_group_id("cartflow")
        .property_map("statements_sha256", sql_sha)
        .build()
        .map_err(|e| AwsError::new("kinesisanalyticsv2:PropertyGroup", "cartflow", e))?;
    Ok(vec![run, ours])
}

async fn ensure_flink(c: &Clients, stage: &Stage, ctx: &TaskContext) -> Result<i64, TaskFailure> {
    let s = &stage.settings;
    let name = s.name("detector");
    let log = &ctx.log;
    let jar = match &s.flink_connector_jar {
        Some(p) => {
            let path = ctx.project_dir.join(p);
            let bytes = std::fs::read(&path).map_err(|e| {
                TaskFailure::permanent(format!("aws.streaming.flink_connector_jar {}: {e}", path.display()))
            })?;
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("connector.jar").to_string();
            Some((format!("lib/{file}"), bytes))
        }
        None => None,
    };
    let bundle = flink_bundle(&stage.sql, jar.as_ref().map(|(n, b)| (n.as_str(), b.as_slice())));
    let sha = sha256_b64(stage.sql.as_bytes());
    let digest = sha256_b64(&bundle).replace(['/', '+', '='], "");
    let loc = stage.code.join(&format!("{name}-{}.zip", &digest[..16]));
    s3::put_bytes(&c.s3, &loc, bundle).await.map_err(fail)?;
    let bucket_arn = format!("arn:aws:s3:::{}", loc.bucket);
    let groups = property_groups(jar.as_ref().map(|(n, _)| n.as_str()), &sha).map_err(fail)?;
    let describe = || async {
        match c.flink.describe_application().application_name(&name).send().await {
            Ok(out) => Ok(out.application_detail().cloned()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(AwsError::new("kinesisanalyticsv2:DescribeApplication", &name, e)),
        }
    };
    match describe().await.map_err(fail)? {
        None => {
            let role = required(&s.flink_role_arn, "flink_role_arn")?;
            let err = |e| fail(AwsError::new("kinesisanalyticsv2:CreateApplication", name.clone(), e));
            let code = ApplicationCodeConfiguration::builder()
                .code_content_type(CodeContentType::Zipfile)
                .code_content(
                    CodeContent::builder()
                        .s3_content_location(
                            S3ContentLocation::builder()
                                .bucket_arn(&bucket_arn)
                                .file_key(&loc.key)
                                .build()
                                .map_err(err)?,
                        )
                        .build(),
                )
                .build()
                .map_err(err)?;
            let config = ApplicationConfiguration::builder()
                .application_code_configuration(code)
                .environment_properties(
                    EnvironmentProperties::builder().set_property_groups(Some(groups)).build().map_err(err)?,
                )
                .build();
            c.flink
                .create_application()
                .application_name(&name)
                .runtime_environment(RuntimeEnvironment::from(s.flink_runtime.as_deref().unwrap_or("FLINK-1_20")))
                .service_execution_role(role)
                .application_configuration(config)
                .send()
                .await
                .map_err(|e| fail(AwsError::new("kinesisanalyticsv2:CreateApplication", &name, e)))?;
            log.line(format_args!("Flink application {name}: created with {}", loc));
        }
        Some(app) => {
            let current = app
                .application_configuration_description()
                .and_then(|d| d.application_code_configuration_description())
                .and_then(|d| d.code_content_description())
                .and_then(|d| d.s3_application_code_location_description())
                .map(|d| d.file_key().to_string());
            if current.as_deref() == Some(loc.key.as_str()) {
                log.line(format_args!("Flink application {name}: code unchanged ({})", loc.key));
            } else {
                let err = |e| fail(AwsError::new("kinesisanalyticsv2:UpdateApplication", name.clone(), e));
                let update = ApplicationConfigurationUpdate::builder()
                    .application_code_configuration_update(
                        ApplicationCodeConfigurationUpdate::builder()
                            .code_content_update(
                                CodeContentUpdate::builder()
                                    .s3_content_location_update(
                                        S3ContentLocationUpdate::builder()
                                            .bucket_arn_update(&bucket_arn)
                                            .file_key_update(&loc.key)
                                            .build(),
                                    )
                                    .build(),
                            )
                            .build(),
                    )
                    .environment_property_updates(
                        EnvironmentPropertyUpdates::builder().set_property_groups(Some(groups)).build().map_err(err)?,
                    )
                    .build();
                c.flink
                    .update_application()
                    .application_name(&name)
                    .current_application_version_id(app.application_version_id())
                    .application_configuration_update(update)
                    .send()
                    .await
                    .map_err(|e| fail(AwsError::new("kinesisanalyticsv2:UpdateApplication", &name, e)))?;
                log.line(format_args!(
                    "Flink application {name}: updated {} -> {} (the rules or the runner changed)",
                    current.unwrap_or_default(),
                    loc.key
                ));
            }
        }
    }
    let started = std::sync::atomic::AtomicBool::new(false);
    let version = std::sync::atomic::AtomicI64::new(0);
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    wait(&format!("Flink application {name}"), c, ctx, || async {
        let app = describe().await?.ok_or_else(|| AwsError {
            call: "kinesisanalyticsv2:DescribeApplication",
            resource: name.clone(),
            message: "the application vanished".into(),
        })?;
        version.store(app.application_version_id(), relaxed);
        match app.application_status() {
            ApplicationStatus::Running => Ok(None),
            ApplicationStatus::Ready if !started.load(relaxed) => {
                c.flink
                    .start_application()
                    .application_name(&name)
                    .send()
                    .await
                    .map_err(|e| AwsError::new("kinesisanalyticsv2:StartApplication", &name, e))?;
                started.store(true, relaxed);
                Ok(Some("READY; started".into()))
            }
            ApplicationStatus::Ready => Err(AwsError {
                call: "kinesisanalyticsv2:StartApplication",
                resource: name.clone(),
                message: "the application went back to READY after starting: see its CloudWatch logs".into(),
            }),
            other => Ok(Some(other.as_str().to_string())),
        }
    })
    .await?;
    let version = version.load(relaxed);
    log.line(format_args!("Flink application {name}: RUNNING (version {version})"));
    Ok(version)
}

async fn ensure_lambda(
    c: &Clients,
    stage: &Stage,
    stream2_arn: &str,
    topic: &str,
    ctx: &TaskContext,
) -> Result<String, TaskFailure> {
    let s = &stage.settings;
    let name = s.name("alert-handler");
    let log = &ctx.log;
    let package = s.lambda_package.as_ref().ok_or_else(|| {
        TaskFailure::permanent(
            "set `aws.streaming.lambda_package` in cartflow.yaml: the alert handler's zip or binary (cargo lambda build --release -p cartflow-streaming --features lambda --output-format zip)",
        )
    })?;
    let path = ctx.project_dir.join(package);
    let bytes = std::fs::read(&path)
        .map_err(|e| TaskFailure::permanent(format!("aws.streaming.lambda_package {}: {e}", path.display())))?;
    let zip = lambda_package(bytes);
    let sha = sha256_b64(&zip);
    let env = Environment::builder()
        .variables("ALERTS_TABLE", s.name("alerts"))
        .variables("ALERTS_TOPIC_ARN", topic)
        .variables("METRICS_NAMESPACE", "cartflow")
        .build();
    let existing = match c.lambda.get_function().function_name(&name).send().await {
        Ok(out) => out.configuration().cloned(),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => None,
        Err(e) => return Err(fail(AwsError::new("lambda:GetFunction", &name, e))),
    };
    match existing {
        None => {
            let role = required(&s.lambda_role_arn, "lambda_role_arn")?;
            c.lambda
                .create_function()
                .function_name(&name)
                .runtime(Runtime::Providedal2023)
                .architectures(Architecture::X8664)
                .handler("bootstrap")
                .role(role)
                .code(FunctionCode::builder().zip_file(Blob::new(zip)).build())
                .environment(env)
                .timeout(60)
                .memory_size(256)
                .send()
                .await
                .map_err(|e| fail(AwsError::new("lambda:CreateFunction", &name, e)))?;
            log.line(format_args!("Lambda {name}: created ({sha})"));
        }
        Some(f) => {
            if f.code_sha256() == Some(sha.as_str()) {
                log.line(format_args!("Lambda {name}: code unchanged"));
            } else {
                c.lambda
                    .update_function_code()
                    .function_name(&name)
                    .zip_file(Blob::new(zip))
                    .send()
                    .await
                    .map_err(|e| fail(AwsError::new("lambda:UpdateFunctionCode", &name, e)))?;
                log.line(format_args!("Lambda {name}: code updated to {sha}"));
            }
            let vars = f.environment().and_then(|e| e.variables());
            if vars.and_then(|v| v.get("ALERTS_TOPIC_ARN")).map(String::as_str) != Some(topic)
                || vars.and_then(|v| v.get("ALERTS_TABLE")) != Some(&s.name("alerts"))
            {
                c.lambda
                    .update_function_configuration()
                    .function_name(&name)
                    .environment(env)
                    .send()
                    .await
                    .map_err(|e| fail(AwsError::new("lambda:UpdateFunctionConfiguration", &name, e)))?;
                log.line(format_args!("Lambda {name}: environment updated"));
            }
        }
    }
    let mappings = c
        .lambda
        .list_event_source_mappings()
        .function_name(&name)
        .event_source_arn(stream2_arn)
        .send()
        .await
        .map_err(|e| fail(AwsError::new("lambda:ListEventSourceMappings", &name, e)))?;
    let failures = ensure_failure_queue(c, &s.name("alert-handler-failures"), ctx).await?;
    let on_failure =
        || DestinationConfig::builder().on_failure(OnFailure::builder().destination(&failures).build()).build();
    match mappings.event_source_mappings().first() {
        None => {
            c.lambda
                .create_event_source_mapping()
                .function_name(&name)
                .event_source_arn(stream2_arn)
                .starting_position(EventSourcePosition::TrimHorizon)
                .batch_size(100)
                .bisect_batch_on_function_error(true)
                .maximum_retry_attempts(10)
                .destination_config(on_failure())
                .send()
                .await
                .map_err(|e| fail(AwsError::new("lambda:CreateEventSourceMapping", &name, e)))?;
            log.line(format_args!(
                "Lambda {name}: event source mapping from {stream2_arn} created (failed batches to {failures})"
            ));
        }
        Some(m) => {
            let current = m.destination_config().and_then(|d| d.on_failure()).and_then(|o| o.destination());
            if current == Some(failures.as_str()) {
                log.line(format_args!("Lambda {name}: event source mapping from stream2 exists"));
            } else {
                let uuid = m.uuid().unwrap_or_default();
                c.lambda
                    .update_event_source_mapping()
                    .uuid(uuid)
                    .destination_config(on_failure())
                    .send()
                    .await
                    .map_err(|e| fail(AwsError::new("lambda:UpdateEventSourceMapping", uuid, e)))?;
                log.line(format_args!(
                    "Lambda {name}: event source mapping from stream2 now sends failed batches to {failures}"
                ));
            }
        }
    }
    Ok(sha)
}

/// The queue that keeps the alert batches the handler could not process after its retries
/// (Lambda's on-failure destination: the batch's shard, sequence numbers and error); returns
/// its ARN. Kept 14 days, SQS's maximum, for a replay with `cartflow reprocess`.
async fn ensure_failure_queue(c: &Clients, name: &str, ctx: &TaskContext) -> Result<String, TaskFailure> {
    let url = match c.sqs.get_queue_url().queue_name(name).send().await {
        Ok(out) => out.queue_url().unwrap_or_default().to_string(),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_queue_does_not_exist()) => {
            let out = c
                .sqs
                .create_queue()
                .queue_name(name)
                .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
                .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
                .send()
                .await
                .map_err(|e| fail(AwsError::new("sqs:CreateQueue", name, e)))?;
            ctx.log.line(format_args!("SQS queue {name}: created"));
            out.queue_url().unwrap_or_default().to_string()
        }
        Err(e) => return Err(fail(AwsError::new("sqs:GetQueueUrl", name, e))),
    };
    let attrs = c
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| fail(AwsError::new("sqs:GetQueueAttributes", name, e)))?;
    attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| TaskFailure::new(format!("sqs:GetQueueAttributes {name}: no QueueArn in the answer")))
}

/// Ensures the whole stage on AWS from the rendered task.
pub async fn run(
    r: &RenderedStreamingStage,
    rules: &RuleSet,
    aws: &AwsEnv,
    ctx: &TaskContext,
) -> Result<TaskOutput, TaskFailure> {
    use cartflow_streaming::flink::{SinkKind, SourceKind};
    if !matches!(r.source.as_str(), "none" | "") {
        return Err(TaskFailure::permanent(format!(
            "on the aws backend events reach Kinesis stream1 from the site, so `source` must be `none` (found `{}`); to replay a file or the simulator into Kinesis use `cartflow produce --backend aws`",
            r.source
        )));
    }
    let settings = aws.settings.streaming.clone();
    let region = aws.region();
    let sql = cartflow_streaming::flink::generate(
        rules,
        &SourceKind::Kinesis { stream: settings.name("stream1"), region: region.clone() },
        &SinkKind::Kinesis { stream: settings.name("stream2"), region },
        &r.rules.display().to_string(),
    );
    let raw = aws.locate("raw/events").map_err(TaskFailure::permanent)?;
    let code = match &settings.code {
        Some(uri) => crate::aws::S3Loc::parse(uri).map_err(TaskFailure::permanent)?,
        None => aws.locate("_code").map_err(TaskFailure::permanent)?,
    };
    let stage = Stage { settings, sql, raw, code };
    let summary = ensure(&stage, aws, ctx).await?;
    ctx.log.line(&summary);
    Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_deterministic_and_lambda_binaries_become_bootstrap() {
        assert_eq!(flink_bundle("SELECT 1", None), flink_bundle("SELECT 1", None));
        assert_ne!(flink_bundle("SELECT 1", None), flink_bundle("SELECT 2", None));
        let zip = lambda_package(b"\x7fELF...".to_vec());
        assert!(zip.starts_with(b"PK\x03\x04"));
        assert!(zip.windows(9).any(|w| w == b"bootstrap"));
        // A zip stays as it is.
        assert_eq!(lambda_package(zip.clone()), zip);
        // Lambda's CodeSha256: base64 of the SHA-256.
        assert_eq!(sha256_b64(b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }

    #[test]
    fn the_runner_executes_one_statement_set() {
        assert!(FLINK_RUNNER.contains("statements.sql") && FLINK_RUNNER.contains("create_statement_set"));
    }
}
